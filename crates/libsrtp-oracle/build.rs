//! Finds the system libsrtp2 with pkg-config and compiles the C shim against its headers.
//!
//! The shim is compiled first and libsrtp2 is linked after it, so the static shim's references
//! to libsrtp2 resolve with any linker.

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    let lib = match pkg_config::Config::new()
        .atleast_version("2.3")
        .cargo_metadata(false)
        .probe("libsrtp2")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "libsrtp2 (>= 2.3) not found by pkg-config: {e}\n\
             install it, e.g. `apt-get install libsrtp2-dev`"
        ),
    };
    let mut build = cc::Build::new();
    build
        .file("csrc/shim.c")
        .warnings(true)
        .extra_warnings(true);
    for dir in &lib.include_paths {
        build.include(dir);
    }
    build.compile("voxgate_srtp_shim");
    for dir in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for name in &lib.libs {
        println!("cargo:rustc-link-lib={name}");
    }
}
