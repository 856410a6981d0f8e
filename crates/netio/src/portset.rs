//! A media relay's sockets: one UDP socket per port of a range on one IPv4 address, watched by
//! one epoll instance (level-triggered), read with `recvmmsg` (with each datagram's IPv4
//! options when asked). One thread drives it with [`PortSet::poll`]; what to do with each
//! datagram is the caller's decision (a sans-I/O core), made in place in the receive buffer.
//!
//! Another thread can interrupt a `poll` with a [`Waker`] (an eventfd in the same epoll set),
//! e.g. to have the caller apply control commands.
//!
//! Three engines ([`Engine`]). **uring** (the default where the kernel has it, see
//! `uring.rs`): a multishot receive armed on every port's socket and the sends on one
//! io_uring, so one system call serves a batch of datagrams from all ports. With epoll, two
//! ways to send what is forwarded:
//! - **sockets**: from each port's own socket, one `sendmmsg` per run of datagrams leaving by
//!   the same socket. With a port per call leg that is one system call per datagram sent (and
//!   one per ready socket received): the cost that bounds rtpengine and any per-port relay in
//!   user space.
//! - **raw** (needs CAP_NET_RAW): every datagram leaves by one `IPPROTO_RAW` socket, its IPv4
//!   and UDP headers written here (source = the relay address and the leg's port, the
//!   received TOS/DSCP kept, the UDP checksum computed, DF set), in `sendmmsg` batches of up
//!   to [`POOL`] datagrams across all calls. Receiving stays on the ports' own sockets, so the
//!   kernel's UDP accounting and port ownership are unchanged.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::{check_options, classify_options_error, NetError, OptionsBuf, MAX_OPTIONS_LEN};

/// Datagrams read per `recvmmsg`.
pub const BATCH: usize = 32;
/// Receive buffers: with the raw engine, what is forwarded accumulates across sockets and
/// leaves in one `sendmmsg` when the pool is full or the poll round ends.
pub const POOL: usize = 256;
/// Room for one datagram (RTP/SRTP packets are far smaller; anything longer is truncated and
/// dropped), after [`HEADROOM`].
pub const BUF_LEN: usize = 2048;
/// Room in front of each received datagram for the IPv4 and UDP headers the raw engine writes.
const HEADROOM: usize = 20 + MAX_OPTIONS_LEN + 8;
const EVENTS: usize = 256;
const WAKE_TOKEN: u64 = u64::MAX;

/// How a [`PortSet`] moves datagrams (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sockets,
    Raw,
    Uring,
}

/// The engine asked for: `Auto` is io_uring where the kernel offers it, else raw when the
/// process may open a raw socket and the set is bound to a specific address, else sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    Auto,
    Sockets,
    Raw,
    Uring,
}

/// Whether io_uring can be set up here (kernel support, not disabled by sysctl or seccomp).
fn uring_available() -> bool {
    io_uring::IoUring::new(2).is_ok()
}

/// A datagram to send: the buffer, the socket index (sockets engine) or the start of the
/// written IPv4 header (raw engine), the length from there, the destination, the options.
#[derive(Clone, Copy)]
struct Out {
    buf: usize,
    sock: usize,
    start: usize,
    len: usize,
    dst: SocketAddrV4,
    options: OptionsBuf,
}

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Ctl([u8; 64]);

/// One received datagram, for the caller to decide on.
pub struct Datagram<'a> {
    /// The relay port it arrived on.
    pub port: u16,
    pub src: SocketAddr,
    /// Its IPv4 header options (empty without `IP_RECVOPTS` or when it had none).
    pub options: &'a [u8],
    /// The receive buffer: the datagram is `buf[..len]`; the caller may rewrite it in place
    /// (up to [`BUF_LEN`] bytes) before sending it on.
    pub buf: &'a mut [u8],
    pub len: usize,
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drop,
    /// Send `buf[..len]` from the socket of `out_port` to `dst`, with `options` in its IPv4
    /// header (empty: none).
    Send {
        out_port: u16,
        dst: SocketAddrV4,
        len: usize,
        options: OptionsBuf,
    },
}

/// Counters of the socket layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortSetStats {
    pub received: u64,
    pub sent: u64,
    /// Datagrams not sent: the socket's send buffer was full, or the kernel refused them.
    pub send_failed: u64,
    /// Datagrams longer than [`BUF_LEN`] (dropped).
    pub truncated: u64,
    pub recv_calls: u64,
    pub send_calls: u64,
}

/// Interrupts a [`PortSet::poll`] from another thread.
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to an eventfd we own; a full counter
        // (EAGAIN) already means "woken".
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                size_of::<u64>(),
            )
        };
    }
}

/// What a [`PortSet::poll`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollOutcome {
    /// A [`Waker`] was used.
    pub woken: bool,
    pub received: usize,
}

/// The relay's sockets.
pub struct PortSet {
    ip: Ipv4Addr,
    first: u16,
    socks: Vec<OwnedFd>,
    epfd: OwnedFd,
    wake: Arc<OwnedFd>,
    /// The raw engine's sending socket.
    raw: Option<OwnedFd>,
    bufs: Vec<[u8; HEADROOM + BUF_LEN]>,
    /// Buffers `..used` hold datagrams waiting in `pending`.
    used: usize,
    names: Vec<libc::sockaddr_in>,
    ctls: Vec<Ctl>,
    out_names: Vec<libc::sockaddr_in>,
    out_ctls: Vec<Ctl>,
    pending: Vec<Out>,
    events: Vec<libc::epoll_event>,
    stats: PortSetStats,
    /// The io_uring engine: wanted, and made by the polling thread on its first poll.
    want_uring: bool,
    uring: Option<crate::uring::Uring>,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSet")
            .field("ip", &self.ip)
            .field("first", &self.first)
            .field("ports", &self.socks.len())
            .finish_non_exhaustive()
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful system call that created it; nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value and its size, on a socket we own.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Raises the soft limit of open files to the hard limit (a relay holds one socket per port);
/// returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
        r.rlim_cur
    }
}

impl PortSet {
    /// Binds `count` UDP sockets on `ip`, ports `first..first+count`, with the sockets engine.
    /// `recv_options`: ask for each datagram's IPv4 options (`IP_RECVOPTS`). `buffer`: the
    /// receive queue of each port (SO_RCVBUF, forced past the system cap when the process
    /// may); send buffers are at least 256 KiB.
    pub fn bind(
        ip: Ipv4Addr,
        first: u16,
        count: u16,
        recv_options: bool,
        buffer: usize,
    ) -> Result<PortSet, NetError> {
        Self::bind_engine(
            ip,
            first,
            count,
            recv_options,
            buffer,
            EngineChoice::Sockets,
        )
    }

    /// As [`PortSet::bind`], with the engine chosen by `engine`.
    pub fn bind_engine(
        ip: Ipv4Addr,
        first: u16,
        count: u16,
        recv_options: bool,
        buffer: usize,
        engine: EngineChoice,
    ) -> Result<PortSet, NetError> {
        let want_uring = match engine {
            EngineChoice::Uring if !uring_available() => {
                return Err(NetError::Io(io::Error::other(
                    "io_uring is not available here (kernel, sysctl kernel.io_uring_disabled, or seccomp)",
                )))
            }
            EngineChoice::Uring => true,
            EngineChoice::Auto => uring_available(),
            _ => false,
        };
        let raw = match engine {
            _ if want_uring => None,
            EngineChoice::Sockets | EngineChoice::Uring => None,
            EngineChoice::Raw if ip.is_unspecified() => {
                return Err(NetError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the raw engine needs a specific address, not 0.0.0.0",
                )))
            }
            EngineChoice::Raw => Some(raw_sender(buffer)?),
            EngineChoice::Auto if ip.is_unspecified() => None,
            EngineChoice::Auto => raw_sender(buffer).ok(),
        };
        let limit = raise_open_files_limit();
        if limit < u64::from(count) + 64 {
            return Err(NetError::Io(io::Error::other(format!(
                "{count} ports need as many open files, the limit is {limit} (raise it: ulimit -n, or LimitNOFILE= in a systemd unit)"
            ))));
        }
        if u32::from(first) + u32::from(count) > 65_536 || count == 0 {
            return Err(NetError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port range {first}+{count} does not fit"),
            )));
        }
        // SAFETY: plain system calls creating descriptors we then own.
        let epfd = owned(cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?);
        let wake = owned(cvt(unsafe {
            libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        })?);
        let add = |fd: RawFd, token: u64| -> io::Result<()> {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: both descriptors are open; `ev` is a valid epoll_event.
            cvt(unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
                .map(|_| ())
        };
        add(wake.as_raw_fd(), WAKE_TOKEN)?;
        let mut socks = Vec::with_capacity(usize::from(count));
        let buf = libc::c_int::try_from(buffer).unwrap_or(libc::c_int::MAX);
        for i in 0..count {
            let port = first + i;
            // SAFETY: creates a socket descriptor we own.
            let fd = owned(cvt(unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            })?);
            let sock = fd.as_raw_fd();
            let sndbuf = buf.max(256 * 1024);
            for (opt, force, size) in [
                (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, buf),
                (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, sndbuf),
            ] {
                if buffer > 0 && setsockopt_int(sock, libc::SOL_SOCKET, force, size).is_err() {
                    let _ = setsockopt_int(sock, libc::SOL_SOCKET, opt, size);
                }
            }
            if recv_options {
                setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_RECVOPTS, 1)?;
            }
            if raw.is_some() {
                // The TOS (DSCP) is carried over to the headers written on the way out.
                setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
            }
            let sa = sockaddr(SocketAddrV4::new(ip, port));
            // SAFETY: binding our socket to a valid sockaddr_in of the size given.
            let rc = unsafe {
                libc::bind(
                    sock,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                return Err(NetError::Io(io::Error::new(
                    e.kind(),
                    format!("binding {ip}:{port}: {e}"),
                )));
            }
            add(sock, u64::from(i))?;
            socks.push(fd);
        }
        // SAFETY: sockaddr_in and the control buffers are plain data; zero is valid.
        let zero_sa: libc::sockaddr_in = unsafe { zeroed() };
        Ok(PortSet {
            ip,
            first,
            socks,
            epfd,
            wake: Arc::new(wake),
            raw,
            bufs: vec![[0u8; HEADROOM + BUF_LEN]; POOL],
            used: 0,
            names: vec![zero_sa; BATCH],
            ctls: vec![Ctl([0; 64]); BATCH],
            out_names: vec![zero_sa; POOL],
            out_ctls: vec![Ctl([0; 64]); POOL],
            pending: Vec::with_capacity(POOL),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            stats: PortSetStats::default(),
            want_uring,
            uring: None,
        })
    }

    /// Sets the receive queue (SO_RCVBUF, forced when the process may) of one port, e.g. a
    /// port many streams share.
    pub fn set_recv_buffer(&mut self, port: u16, bytes: usize) -> Result<(), NetError> {
        let i = self.index(port).ok_or_else(|| {
            NetError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {port} is not in the set"),
            ))
        })?;
        let fd = self.socks[i].as_raw_fd();
        let b = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, b).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, b)?;
        }
        Ok(())
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        if self.want_uring {
            Engine::Uring
        } else if self.raw.is_some() {
            Engine::Raw
        } else {
            Engine::Sockets
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn first_port(&self) -> u16 {
        self.first
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    pub fn stats(&self) -> PortSetStats {
        self.stats
    }

    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Sends one datagram from the socket of `port` (outside a poll: tests, probes), through
    /// that socket whatever the engine.
    pub fn send_from(
        &mut self,
        port: u16,
        dst: SocketAddrV4,
        data: &[u8],
        options: &[u8],
    ) -> Result<(), NetError> {
        check_options(options)?;
        let i = self.index(port).ok_or_else(|| {
            NetError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {port} is not in the set"),
            ))
        })?;
        self.flush();
        let opts = OptionsBuf::from_slice(options).unwrap_or_default();
        let n = data.len().min(BUF_LEN);
        self.bufs[0][HEADROOM..HEADROOM + n].copy_from_slice(&data[..n]);
        self.pending.push(Out {
            buf: 0,
            sock: i,
            start: HEADROOM,
            len: n,
            dst,
            options: opts,
        });
        self.used = 1;
        let before = self.stats.send_failed;
        self.flush_sockets();
        self.pending.clear();
        self.used = 0;
        if self.stats.send_failed > before {
            return Err(classify_options_error(
                options,
                io::Error::other("sendmmsg failed"),
            ));
        }
        Ok(())
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.first)?);
        (i < self.socks.len()).then_some(i)
    }

    /// Waits up to `timeout` (`None`: until something happens) for datagrams or a wake-up,
    /// hands every datagram to `decide`, and sends what it says.
    pub fn poll<F>(&mut self, timeout: Option<Duration>, mut decide: F) -> io::Result<PollOutcome>
    where
        F: FnMut(Datagram<'_>) -> Action,
    {
        if self.want_uring {
            if self.uring.is_none() {
                match crate::uring::Uring::new(&self.socks, self.wake.as_raw_fd()) {
                    Ok(u) => self.uring = Some(u),
                    Err(e) => {
                        tracing::warn!(error = %e, "io_uring set-up failed: using epoll");
                        self.want_uring = false;
                    }
                }
            }
            if let Some(u) = self.uring.as_mut() {
                let (received, woken) = u.poll(
                    &self.socks,
                    self.first,
                    self.wake.as_raw_fd(),
                    timeout,
                    &mut self.stats,
                    &mut decide,
                )?;
                if u.unsupported {
                    tracing::warn!(
                        "multishot receives are not supported by this kernel: using epoll"
                    );
                    self.uring = None;
                    self.want_uring = false;
                }
                return Ok(PollOutcome { woken, received });
            }
        }
        let ms = match timeout {
            None => -1,
            Some(d) => libc::c_int::try_from(d.as_millis().max(u128::from(d > Duration::ZERO)))
                .unwrap_or(libc::c_int::MAX),
        };
        // SAFETY: `events` is a valid buffer of EVENTS epoll_event entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                ms,
            )
        };
        let mut out = PollOutcome::default();
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(out);
            }
            return Err(e);
        }
        for k in 0..n as usize {
            let token = self.events[k].u64;
            if token == WAKE_TOKEN {
                let mut v = 0u64;
                // SAFETY: reading 8 bytes into a u64 from our nonblocking eventfd.
                let _ = unsafe {
                    libc::read(
                        self.wake.as_raw_fd(),
                        (&mut v as *mut u64).cast(),
                        size_of::<u64>(),
                    )
                };
                out.woken = true;
                continue;
            }
            let Ok(i) = usize::try_from(token) else {
                continue;
            };
            if i >= self.socks.len() {
                continue;
            }
            out.received += self.read_socket(i, &mut decide);
        }
        self.flush();
        Ok(out)
    }

    /// One `recvmmsg` on socket `i` (level-triggered epoll calls again if more are queued) into
    /// the free buffers, and the decisions. The sockets engine sends at once; the raw engine
    /// when the pool is full or the round ends.
    #[allow(clippy::needless_range_loop)] // several parallel arrays share the index
    fn read_socket<F>(&mut self, i: usize, decide: &mut F) -> usize
    where
        F: FnMut(Datagram<'_>) -> Action,
    {
        if POOL - self.used < BATCH {
            self.flush();
        }
        let base = self.used;
        // SAFETY: mmsghdr/iovec are plain data; zero is valid and every pointer is set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        for j in 0..BATCH {
            iovs[j] = libc::iovec {
                iov_base: self.bufs[base + j][HEADROOM..].as_mut_ptr().cast(),
                iov_len: BUF_LEN,
            };
            let h = &mut hdrs[j].msg_hdr;
            h.msg_name = (&mut self.names[j] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[j];
            h.msg_iovlen = 1;
            h.msg_control = self.ctls[j].0.as_mut_ptr().cast();
            h.msg_controllen = self.ctls[j].0.len() as _;
        }
        self.stats.recv_calls += 1;
        // SAFETY: `hdrs` holds BATCH valid headers whose buffers (names, iovecs pointing into
        // `bufs[base..base + BATCH]`, control buffers) live in `self` and on this stack frame.
        let n = unsafe {
            libc::recvmmsg(
                self.socks[i].as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        self.stats.received += n as u64;
        let port = self.first + i as u16;
        let ip = self.ip;
        for j in 0..n {
            let h = &hdrs[j].msg_hdr;
            let len = hdrs[j].msg_len as usize;
            if h.msg_flags & libc::MSG_TRUNC != 0 || len > BUF_LEN {
                self.stats.truncated += 1;
                continue;
            }
            let mut opts = [0u8; MAX_OPTIONS_LEN];
            let mut olen = 0;
            let mut tos = 0u8;
            // SAFETY: walking the control messages the kernel wrote into our control buffer,
            // with the length it reported, through the libc CMSG macros.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP {
                        let data = libc::CMSG_DATA(c);
                        let dlen =
                            ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                        if (*c).cmsg_type == libc::IP_OPTIONS || (*c).cmsg_type == libc::IP_RECVOPTS
                        {
                            let dlen = dlen.min(MAX_OPTIONS_LEN);
                            std::ptr::copy_nonoverlapping(data, opts.as_mut_ptr(), dlen);
                            olen = dlen;
                        } else if (*c).cmsg_type == libc::IP_TOS && dlen >= 1 {
                            tos = *data;
                        }
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            let src = SocketAddr::V4(from_sockaddr(&self.names[j]));
            let b = base + j;
            let d = Datagram {
                port,
                src,
                options: &opts[..olen],
                buf: &mut self.bufs[b][HEADROOM..],
                len,
            };
            let Action::Send {
                out_port,
                dst,
                len,
                options,
            } = decide(d)
            else {
                continue;
            };
            let Some(sock) = self.index(out_port) else {
                self.stats.send_failed += 1;
                continue;
            };
            let len = len.min(BUF_LEN);
            if self.raw.is_some() {
                let from = SocketAddrV4::new(ip, out_port);
                match write_headers(&mut self.bufs[b], HEADROOM, len, from, dst, tos, &options) {
                    Some(start) => self.pending.push(Out {
                        buf: b,
                        sock,
                        start,
                        len: HEADROOM + len - start,
                        dst,
                        options,
                    }),
                    None => self.stats.send_failed += 1,
                }
            } else {
                self.pending.push(Out {
                    buf: b,
                    sock,
                    start: HEADROOM,
                    len,
                    dst,
                    options,
                });
            }
        }
        self.used = base + n;
        if self.raw.is_none() {
            self.flush();
        }
        n
    }

    /// Sends what is pending and frees the buffers.
    fn flush(&mut self) {
        if self.raw.is_some() {
            self.flush_raw();
        } else {
            self.flush_sockets();
        }
        self.pending.clear();
        self.used = 0;
    }

    /// One `sendmmsg` per run of datagrams leaving by the same socket.
    #[allow(clippy::needless_range_loop)]
    fn flush_sockets(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_by_key(|p| p.sock);
        // SAFETY: plain data; pointers set before use.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; self.pending.len()];
        let mut iovs: Vec<libc::iovec> = vec![unsafe { zeroed() }; self.pending.len()];
        let mut start = 0;
        while start < self.pending.len() {
            let sock = self.pending[start].sock;
            let mut end = start;
            while end < self.pending.len() && self.pending[end].sock == sock {
                end += 1;
            }
            for k in start..end {
                let o = self.pending[k];
                self.out_names[k] = sockaddr(o.dst);
                iovs[k] = libc::iovec {
                    iov_base: self.bufs[o.buf][o.start..].as_mut_ptr().cast(),
                    iov_len: o.len,
                };
                let h = &mut hdrs[k].msg_hdr;
                h.msg_name = (&mut self.out_names[k] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &mut iovs[k];
                h.msg_iovlen = 1;
                h.msg_flags = 0;
                if o.options.is_empty() {
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                } else {
                    let op = o.options.as_slice();
                    let ctl = &mut self.out_ctls[k].0;
                    // SAFETY: building one control message (IP_RETOPTS with the option bytes)
                    // inside our aligned 64-byte buffer; CMSG_SPACE(40) fits in it.
                    unsafe {
                        let space = libc::CMSG_SPACE(op.len() as u32) as usize;
                        h.msg_control = ctl.as_mut_ptr().cast();
                        h.msg_controllen = space as _;
                        let c = libc::CMSG_FIRSTHDR(h);
                        (*c).cmsg_level = libc::IPPROTO_IP;
                        (*c).cmsg_type = libc::IP_RETOPTS;
                        (*c).cmsg_len = libc::CMSG_LEN(op.len() as u32) as _;
                        std::ptr::copy_nonoverlapping(op.as_ptr(), libc::CMSG_DATA(c), op.len());
                    }
                }
            }
            let fd = self.socks[sock].as_raw_fd();
            self.send_batch(fd, &mut hdrs[start..end]);
            start = end;
        }
    }

    /// One `sendmmsg` (or a few) on the raw socket for everything pending.
    #[allow(clippy::needless_range_loop)]
    fn flush_raw(&mut self) {
        let Some(fd) = self.raw.as_ref().map(|r| r.as_raw_fd()) else {
            return;
        };
        let count = self.pending.len();
        if count == 0 {
            return;
        }
        // SAFETY: plain data; pointers set before use.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; count];
        let mut iovs: Vec<libc::iovec> = vec![unsafe { zeroed() }; count];
        for k in 0..count {
            let o = self.pending[k];
            self.out_names[k] = sockaddr(SocketAddrV4::new(*o.dst.ip(), 0));
            iovs[k] = libc::iovec {
                iov_base: self.bufs[o.buf][o.start..].as_mut_ptr().cast(),
                iov_len: o.len,
            };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = (&mut self.out_names[k] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[k];
            h.msg_iovlen = 1;
        }
        self.send_batch(fd, &mut hdrs);
    }

    /// `sendmmsg` until every header is sent or dropped (one that the kernel refuses is
    /// counted and skipped).
    fn send_batch(&mut self, fd: RawFd, hdrs: &mut [libc::mmsghdr]) {
        let mut done = 0;
        while done < hdrs.len() {
            self.stats.send_calls += 1;
            // SAFETY: `hdrs[done..]` are valid headers whose buffers live in `self` and in the
            // caller's frame for the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr().add(done),
                    (hdrs.len() - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                self.stats.send_failed += 1;
                done += 1;
            } else {
                self.stats.sent += r as u64;
                done += r as usize;
            }
        }
    }
}

/// The raw engine's sending socket (IPPROTO_RAW: headers written by us).
fn raw_sender(buffer: usize) -> Result<OwnedFd, NetError> {
    // SAFETY: creating a socket we own.
    let tx = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if tx < 0 {
        return Err(NetError::Io(io::Error::other(format!(
            "the raw engine needs CAP_NET_RAW: {}",
            io::Error::last_os_error()
        ))));
    }
    let tx = owned(tx);
    let b =
        libc::c_int::try_from(buffer.saturating_mul(16).max(1 << 20)).unwrap_or(libc::c_int::MAX);
    if setsockopt_int(tx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, b).is_err() {
        let _ = setsockopt_int(tx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, b);
    }
    Ok(tx)
}

/// The ones' complement sum of `data` (RFC 1071), not folded.
fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = sum.overflowing_add(w);
        sum = s + u64::from(carry);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let w = u64::from_be_bytes(tail);
    let (s, carry) = sum.overflowing_add(w);
    s + u64::from(carry)
}

fn csum_fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Writes the IPv4 and UDP headers of a datagram whose payload is `buf[at..at + len]` in
/// front of it; returns where the IPv4 header starts.
fn write_headers(
    buf: &mut [u8],
    at: usize,
    len: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tos: u8,
    options: &OptionsBuf,
) -> Option<usize> {
    let options = options.as_slice();
    let ihl = 20 + options.len();
    let start = at.checked_sub(8 + ihl)?;
    let total = u16::try_from(ihl + 8 + len).ok()?;
    let ulen = u16::try_from(8 + len).ok()?;
    let h = &mut buf[start..at];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]); // identification: filled in by the kernel
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[8] = 64;
    h[9] = 17;
    h[10..12].copy_from_slice(&[0, 0]); // header checksum: computed by the kernel
    h[12..16].copy_from_slice(&src.ip().octets());
    h[16..20].copy_from_slice(&dst.ip().octets());
    h[20..ihl].copy_from_slice(options);
    let u = ihl;
    h[u..u + 2].copy_from_slice(&src.port().to_be_bytes());
    h[u + 2..u + 4].copy_from_slice(&dst.port().to_be_bytes());
    h[u + 4..u + 6].copy_from_slice(&ulen.to_be_bytes());
    h[u + 6..u + 8].copy_from_slice(&[0, 0]);
    // RFC 768: over the pseudo-header, the UDP header and the data.
    let mut sum = csum_add(0, &src.ip().octets());
    sum = csum_add(sum, &dst.ip().octets());
    sum = csum_add(sum, &[0, 17]);
    sum = csum_add(sum, &ulen.to_be_bytes());
    sum = csum_add(sum, &buf[start + u..at + len]);
    let mut c = !csum_fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    buf[start + u + 6..start + u + 8].copy_from_slice(&c.to_be_bytes());
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn free_range(n: u16) -> u16 {
        // Ask the kernel for a free port and hope the next ones are free too; retried.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        p.saturating_sub(n).max(20_000) & !1
    }

    fn bind_with(n: u16, opts: bool, engine: EngineChoice) -> PortSet {
        for _ in 0..20 {
            if let Ok(p) =
                PortSet::bind_engine(Ipv4Addr::LOCALHOST, free_range(n), n, opts, 1 << 20, engine)
            {
                return p;
            }
        }
        panic!("no free port range");
    }

    fn bind(n: u16, opts: bool) -> PortSet {
        bind_with(n, opts, EngineChoice::Sockets)
    }

    #[test]
    fn forwards_between_ports_and_wakes() {
        forwarding(EngineChoice::Sockets);
    }

    /// The raw engine (tests run as root in CI: CAP_NET_RAW).
    #[test]
    fn the_raw_engine_forwards_between_ports_and_wakes() {
        forwarding(EngineChoice::Raw);
    }

    /// The io_uring engine (Linux 6.1; CI's kernel has it).
    #[test]
    fn the_uring_engine_forwards_between_ports_and_wakes() {
        forwarding(EngineChoice::Uring);
    }

    fn forwarding(engine: EngineChoice) {
        let mut set = bind_with(4, false, engine);
        assert_eq!(
            set.engine(),
            match engine {
                EngineChoice::Raw => Engine::Raw,
                EngineChoice::Uring => Engine::Uring,
                _ => Engine::Sockets,
            }
        );
        let first = set.first_port();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let SocketAddr::V4(b_addr) = b.local_addr().unwrap() else {
            unreachable!()
        };
        for k in 0..5u8 {
            a.send_to(&[k; 100], ("127.0.0.1", first)).unwrap();
        }
        let mut got = 0;
        while got < 5 {
            let o = set
                .poll(Some(Duration::from_secs(2)), |d| {
                    assert_eq!(d.port, first);
                    assert_eq!(d.src, a.local_addr().unwrap());
                    assert!(d.options.is_empty());
                    d.buf[0] ^= 0xff; // rewritten in place
                    Action::Send {
                        out_port: first + 3,
                        dst: b_addr,
                        len: d.len,
                        options: OptionsBuf::default(),
                    }
                })
                .unwrap();
            assert!(o.received > 0, "nothing received");
            got += o.received;
        }
        let mut buf = [0u8; 200];
        for k in 0..5u8 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(n, 100);
            assert_eq!(from.port(), first + 3);
            assert_eq!(buf[0], k ^ 0xff);
        }
        // (io_uring counts a send when its completion is reaped, at the next poll.)
        set.poll(Some(Duration::from_millis(20)), |_| Action::Drop)
            .unwrap();
        assert_eq!(set.stats().sent, 5);
        // A waker from another thread interrupts a poll without a timeout.
        let w = set.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let o = set.poll(None, |_| Action::Drop).unwrap();
        assert!(o.woken);
        t.join().unwrap();
    }

    #[test]
    fn the_raw_engine_reads_and_writes_ipv4_options() {
        options_both_ways(EngineChoice::Raw);
    }

    #[test]
    fn the_uring_engine_reads_and_writes_ipv4_options() {
        options_both_ways(EngineChoice::Uring);
    }

    fn options_both_ways(engine: EngineChoice) {
        let mut set = bind_with(4, true, engine);
        let first = set.first_port();
        let opts = [0x9e, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0];
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, first + 2);
        // In: a datagram with the option (sent from a port of the set's own socket).
        set.send_from(first, dst, b"tagged", &opts).unwrap();
        // Out: forwarded to a plain socket with other options written into the header.
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let SocketAddr::V4(b_addr) = b.local_addr().unwrap() else {
            unreachable!()
        };
        let out_opts = OptionsBuf::from_slice(&[0x9e, 10, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0]).unwrap();
        let mut seen = Vec::new();
        while seen.is_empty() {
            set.poll(Some(Duration::from_secs(2)), |d| {
                seen.push((d.port, d.src, d.options.to_vec(), d.buf[..d.len].to_vec()));
                Action::Send {
                    out_port: first + 1,
                    dst: b_addr,
                    len: d.len,
                    options: out_opts,
                }
            })
            .unwrap();
        }
        assert_eq!(seen[0].0, first + 2);
        assert_eq!(seen[0].1.port(), first);
        assert_eq!(seen[0].2, opts.to_vec());
        assert_eq!(seen[0].3, b"tagged".to_vec());
        // The receiver gets the datagram (valid UDP checksum, or the kernel would drop it) from
        // the leg's port.
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"tagged");
        assert_eq!(from.port(), first + 1);
        set.poll(Some(Duration::from_millis(20)), |_| Action::Drop)
            .unwrap();
        assert_eq!(set.stats().sent, 1 + 1);
    }

    #[test]
    fn checksums_follow_rfc_1071() {
        // RFC 1071 §3's example sum of 00 01 f2 03 f4 f5 f6 f7 is 0xddf2.
        assert_eq!(
            csum_fold(csum_add(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
        assert_eq!(csum_fold(csum_add(0, &[0xff, 0xff, 0x00, 0x01])), 0x0001);
    }

    #[test]
    fn per_datagram_ipv4_options_are_sent_and_received() {
        let mut set = bind(4, true);
        let first = set.first_port();
        let opts = [0x9e, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0];
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, first + 2);
        // Option 158 needs CAP_NET_RAW (tests run as root in CI).
        set.send_from(first, dst, b"tagged", &opts).unwrap();
        set.send_from(first, dst, b"plain", &[]).unwrap();
        let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while seen.len() < 2 {
            let o = set
                .poll(Some(Duration::from_secs(2)), |d| {
                    assert_eq!(d.port, first + 2);
                    seen.push((d.buf[..d.len].to_vec(), d.options.to_vec()));
                    Action::Drop
                })
                .unwrap();
            assert!(o.received > 0, "nothing received");
        }
        assert_eq!(seen[0], (b"tagged".to_vec(), opts.to_vec()));
        assert_eq!(seen[1], (b"plain".to_vec(), Vec::new()));
    }
}
