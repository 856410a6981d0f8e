//! The system calls, each `unsafe` block with its SAFETY argument. Everything else in the crate is safe code.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use crate::{NetError, OptionsBuf, MAX_OPTIONS_LEN};

/// Control-message buffer, aligned for `cmsghdr`. Room for the options plus other ancillary data the caller may
/// have enabled on the socket (timestamps, TTL, packet info).
#[repr(C, align(8))]
struct CmsgBuf([u8; 256]);

pub(crate) fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open descriptor for the borrow's lifetime; `value` is valid for reads of `len` bytes
    // (a null pointer with length 0 is never passed: an empty slice's pointer is dangling but non-null, and the
    // kernel reads nothing when the length is 0).
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt_bytes(fd, level, name, &value.to_ne_bytes())
}

pub(crate) fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    out: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(out.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is open; `out` is valid for writes of `len` bytes and `len` is a valid, writable socklen_t
    // that the kernel sets to the number of bytes written (never more than the length given).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(len).unwrap_or(0).min(out.len()))
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn recvmsg_options(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, SocketAddr, OptionsBuf), NetError> {
    loop {
        // SAFETY: sockaddr_storage is plain data for which all-zero bytes are a valid value.
        let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
        let mut control = CmsgBuf([0; 256]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data (pointers and integers); all-zero is a valid value, filled in below.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = ptr::addr_of_mut!(addr).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        // SAFETY: every pointer in `msg` points to a live local or to `buf`, valid for writes of the lengths given
        // next to it, for the duration of the call; `fd` is open.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NetError::Io(err));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(NetError::Truncated {
                capacity: buf.len(),
            });
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(NetError::ControlTruncated);
        }
        let from = sockaddr_to_std(&addr, msg.msg_namelen)?;
        let options = received_options(&msg);
        return Ok((usize::try_from(n).unwrap_or(0), from, options));
    }
}

/// The IPv4 options in the control messages of a `msg` the kernel filled in.
fn received_options(msg: &libc::msghdr) -> OptionsBuf {
    let mut options = OptionsBuf::default();
    // SAFETY: `msg` was filled in by a successful recvmsg and its control buffer (still alive in the caller) holds
    // `msg_controllen` bytes of well-formed control messages; CMSG_FIRSTHDR/CMSG_NXTHDR stay within it and return
    // null at its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points to a complete cmsghdr inside the control buffer (see above);
        // the buffer is 8-aligned and the kernel aligns every header.
        let hdr = unsafe { &*cmsg };
        // The kernel reports received options with type IP_RECVOPTS; IP_OPTIONS accepted as well for safety.
        if hdr.cmsg_level == libc::IPPROTO_IP
            && (hdr.cmsg_type == libc::IP_RECVOPTS || hdr.cmsg_type == libc::IP_OPTIONS)
        {
            // SAFETY: CMSG_LEN is a pure computation on an integer.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let data_len = (hdr.cmsg_len as usize)
                .saturating_sub(header_len)
                .min(MAX_OPTIONS_LEN);
            // SAFETY: the data of this control message starts at CMSG_DATA and holds `cmsg_len - CMSG_LEN(0)`
            // bytes inside the control buffer; we copy at most that many, and at most 40, into our array.
            unsafe {
                ptr::copy_nonoverlapping(
                    libc::CMSG_DATA(cmsg),
                    options.bytes.as_mut_ptr(),
                    data_len,
                );
            }
            options.len = data_len as u8;
        }
        // SAFETY: as for CMSG_FIRSTHDR: `cmsg` is a header inside `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    options
}

fn sockaddr_to_std(
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Result<SocketAddr, NetError> {
    let len = len as usize;
    match i32::from(addr.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family is AF_INET and the kernel wrote a whole sockaddr_in; sockaddr_storage is larger
            // and at least as aligned as sockaddr_in.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        family => Err(NetError::Io(io::Error::other(format!(
            "recvmsg returned a source address of family {family} ({len} bytes)"
        )))),
    }
}

pub(crate) fn sendmsg_options(
    fd: BorrowedFd<'_>,
    datagram: &[u8],
    to: SocketAddrV4,
    options: &[u8],
) -> io::Result<usize> {
    let mut addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut control = CmsgBuf([0; 256]);
    let mut iov = libc::iovec {
        iov_base: datagram.as_ptr() as *mut libc::c_void,
        iov_len: datagram.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value, filled in below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = ptr::addr_of_mut!(addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !options.is_empty() {
        // options.len() <= 40 (checked by the caller), so the control message fits in the 256-byte buffer.
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure computations on an integer.
        let (space, cmsg_len) = unsafe {
            (
                libc::CMSG_SPACE(options.len() as u32),
                libc::CMSG_LEN(options.len() as u32),
            )
        };
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is 8-aligned and `space` (<= 256) bytes long, so CMSG_FIRSTHDR returns a
        // non-null pointer to a cmsghdr inside it, followed by room for `options.len()` data bytes at CMSG_DATA.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            // Linux (ip_cmsg_send) takes per-packet options as IP_RETOPTS; IP_OPTIONS there is EINVAL.
            (*cmsg).cmsg_type = libc::IP_RETOPTS;
            (*cmsg).cmsg_len = cmsg_len as _;
            ptr::copy_nonoverlapping(options.as_ptr(), libc::CMSG_DATA(cmsg), options.len());
        }
    }
    loop {
        // SAFETY: every pointer in `msg` points to a live local or to `datagram`, valid for reads of the lengths
        // given next to it, for the duration of the call (the kernel does not write through msg_iov on send).
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether the calling thread has CAP_NET_RAW in its effective set (capget(2), version 3 structures). When the
/// question cannot be answered, assumes it does not, so that the error points at the likely cause.
pub(crate) fn has_cap_net_raw() -> bool {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_RAW: u32 = 13;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [MaybeUninit::<CapData>::uninit(); 2];
    // SAFETY: capget with a version-3 header and pid 0 (the calling thread) writes two CapData structures, for
    // which `data` has room; the layouts match linux/capability.h.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: capget succeeded and initialised both elements.
    let low = unsafe { data[0].assume_init() };
    low.effective & (1 << CAP_NET_RAW) != 0
}
