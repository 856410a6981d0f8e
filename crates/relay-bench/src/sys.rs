//! The few system calls std does not wrap: the monotonic clock, epoll with a nanosecond timeout,
//! recvmmsg, getrusage, RLIMIT_NOFILE and the timer slack. Each unsafe block is one FFI call
//! whose pointers come from live Rust objects of the right type and size.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of this process, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft limit on open files to at least `want` (and the hard limit too when
/// allowed, i.e. as root). Returns the soft limit in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: `raised` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: go as far as it allows.
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `capped` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_max)
}

/// Sets this thread's timer slack (how late the kernel may fire its timers) in nanoseconds:
/// the default 50 µs would blur the pacing of sends a few µs apart.
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    const PR_SET_TIMERSLACK: libc::c_int = 29;
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes one unsigned long argument and touches no memory.
    if unsafe { libc::prctl(PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets an integer socket option.
pub fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value points at a live i32 whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A level-triggered epoll instance whose events carry a u64 token.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call, no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input, edge-triggered: the caller must read until nothing is left.
    pub fn add_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits at most `timeout_ns` (0: do not wait) and returns the tokens of the ready sockets
    /// in `out` (cleared first). EINTR counts as no event.
    pub fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ns: u64,
        out: &mut Vec<u64>,
    ) -> io::Result<()> {
        out.clear();
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a writable array of `max` epoll_events, `ts` a valid timespec,
        // and a null sigmask means "keep the current one".
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        out.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// CLOCK_REALTIME in nanoseconds: the clock of the kernel's receive timestamps (SO_TIMESTAMPNS).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Control buffer of one message: room for a few cmsgs (SCM_TIMESTAMPNS needs 32 bytes), u64
/// aligned as cmsghdr requires.
const CTRL_WORDS: usize = 16;

/// Buffers for receiving up to `BATCH` datagrams with one recvmmsg call, with the kernel's
/// receive timestamp of each (when SO_TIMESTAMPNS is on).
pub struct RecvBatch {
    bufs: Vec<[u8; RecvBatch::BUF]>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    lens: [usize; RecvBatch::BATCH],
    stamps: [Option<u64>; RecvBatch::BATCH],
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").finish_non_exhaustive()
    }
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub const BATCH: usize = 16;
    pub const BUF: usize = 2048;

    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0u8; RecvBatch::BUF]; RecvBatch::BATCH],
            ctrl: vec![[0u64; CTRL_WORDS]; RecvBatch::BATCH],
            lens: [0; RecvBatch::BATCH],
            stamps: [None; RecvBatch::BATCH],
        }
    }

    /// Receives what is queued on `fd` without waiting (MSG_DONTWAIT), up to BATCH datagrams;
    /// returns how many (0 when none). A datagram longer than BUF is cut (its length is BUF).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The iovec/mmsghdr arrays live on the stack for this call only and point into
        // `self.bufs` and `self.ctrl`, which outlive the call.
        let mut iov: [libc::iovec; RecvBatch::BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: RecvBatch::BUF,
        });
        // SAFETY: an all-zero mmsghdr is valid (null name and control, zero lengths).
        let mut msgs: [libc::mmsghdr; RecvBatch::BATCH] = unsafe { std::mem::zeroed() };
        for ((m, v), c) in msgs
            .iter_mut()
            .zip(iov.iter_mut())
            .zip(self.ctrl.iter_mut())
        {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = c.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = std::mem::size_of_val(c);
        }
        // SAFETY: `msgs` holds BATCH valid headers whose single iovecs point at BUF writable
        // bytes each and whose control buffers are writable and of the given length; no name;
        // a null timeout.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RecvBatch::BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for (i, m) in msgs[..n].iter().enumerate() {
            self.lens[i] = (m.msg_len as usize).min(RecvBatch::BUF);
            self.stamps[i] = timestamp_ns(&m.msg_hdr);
        }
        Ok(n)
    }

    /// Datagram `i` of the last `recv`, mutable (for an in-place SRTP check).
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i];
        &mut self.bufs[i][..len]
    }

    /// The kernel's receive time (CLOCK_REALTIME ns) of datagram `i`, when it gave one.
    pub fn stamp(&self, i: usize) -> Option<u64> {
        self.stamps[i]
    }
}

/// The SCM_TIMESTAMPNS control message of a received message header, in ns.
fn timestamp_ns(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: `hdr` was filled by recvmmsg: msg_control points at our control buffer and
    // msg_controllen says how much of it the kernel wrote; the CMSG_* macros stay inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some((ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// A raw IPv4 socket for sending whole IP datagrams (IPPROTO_RAW: the caller writes the IP
/// header, options included), non-blocking. Needs CAP_NET_RAW.
pub fn raw_ipv4_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call, no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Up to `BATCH` datagrams to send with one sendmmsg call, each to its own IPv4 address.
pub struct SendBatch {
    bufs: Vec<[u8; SendBatch::BUF]>,
    lens: [usize; SendBatch::BATCH],
    dsts: [libc::sockaddr_in; SendBatch::BATCH],
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> SendBatch {
        SendBatch::new()
    }
}

impl SendBatch {
    pub const BATCH: usize = 64;
    pub const BUF: usize = 2048;

    pub fn new() -> SendBatch {
        // SAFETY: an all-zero sockaddr_in is a valid value.
        let zero: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        SendBatch {
            bufs: vec![[0u8; SendBatch::BUF]; SendBatch::BATCH],
            lens: [0; SendBatch::BATCH],
            dsts: [zero; SendBatch::BATCH],
        }
    }

    /// The buffer of slot `k` (< BATCH).
    pub fn buf_mut(&mut self, k: usize) -> &mut [u8; SendBatch::BUF] {
        &mut self.bufs[k]
    }

    /// Slot `k` holds `len` bytes for `dst`.
    pub fn set(&mut self, k: usize, len: usize, dst: std::net::Ipv4Addr) {
        self.lens[k] = len.min(SendBatch::BUF);
        self.dsts[k] = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
    }

    /// Sends slots `0..n` on `fd`; returns how many went out (all of them unless an error,
    /// which is returned beside the count).
    pub fn send(&mut self, fd: RawFd, n: usize) -> (usize, Option<io::Error>) {
        let n = n.min(SendBatch::BATCH);
        let mut iov: [libc::iovec; SendBatch::BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: self.lens[i],
        });
        // SAFETY: an all-zero mmsghdr is valid (null name and control, zero lengths).
        let mut msgs: [libc::mmsghdr; SendBatch::BATCH] = unsafe { std::mem::zeroed() };
        for ((m, v), d) in msgs
            .iter_mut()
            .zip(iov.iter_mut())
            .zip(self.dsts.iter_mut())
        {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (d as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] are valid headers whose iovecs point at `lens` readable bytes
            // in `self.bufs` and whose names point at sockaddr_ins in `self.dsts`, all of which
            // outlive the call.
            let r = unsafe {
                libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0)
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return (done, Some(e));
            }
            if r == 0 {
                return (done, Some(io::Error::other("sendmmsg sent nothing")));
            }
            done += r as usize;
        }
        (done, None)
    }
}
