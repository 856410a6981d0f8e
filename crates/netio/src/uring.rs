//! The io_uring engine of a [`PortSet`](crate::portset::PortSet): every port's socket has one
//! multishot `recvmsg` armed on a ring, receiving into a ring of provided buffers (the kernel
//! picks a buffer per datagram, with the source address and the IPv4 options laid out in front
//! of the payload); forwarded datagrams leave as `sendmsg` operations on the same ring, from the
//! port's own socket, straight from the buffer they arrived in. A single `io_uring_enter` then
//! submits the sends and collects the next batch of datagrams from all ports: no system call
//! per datagram, which is what bounds a relay with a socket per port (epoll, then `recvmmsg`
//! per ready socket).
//!
//! Needs Linux 6.1 (multishot `recvmsg`, provided buffer rings, deferred task work). The ring
//! is made by the thread that polls (lazily, on the first poll), as single-issuer rings want.

use std::alloc::{alloc_zeroed, Layout};
use std::io;
use std::mem::ManuallyDrop;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use crate::portset::{Action, Datagram, PortSetStats, BUF_LEN};
use crate::MAX_OPTIONS_LEN;

/// Provided buffers (a power of two).
const NBUF: u16 = 4096;
/// Control bytes reserved per received datagram (IP_RECVOPTS with 40 bytes of options, IP_TOS).
const CTL: usize = 96;
/// What the kernel writes in front of the payload: the io_uring_recvmsg_out header (16 bytes),
/// the source address, the control messages.
const FRONT: usize = 16 + size_of::<libc::sockaddr_in>() + CTL;
/// One provided buffer.
const BUFSZ: usize = FRONT + BUF_LEN;
const BGID: u16 = 0x7e;
const WAKE: u64 = u64::MAX;
const SEND: u64 = 1 << 62;

/// A send's own msghdr, iovec, destination and control message, kept until it completes.
#[repr(C, align(8))]
struct SendSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    dst: libc::sockaddr_in,
    ctl: [u8; 64],
}

pub(crate) struct Uring {
    ring: IoUring,
    /// The provided-buffer ring and the buffers: the kernel may still be completing a receive
    /// into them while the ring is torn down, so they are never freed (a relay's sockets live
    /// as long as its process; see Drop).
    br: *mut BufRingEntry,
    bufs: ManuallyDrop<Box<[u8]>>,
    slots: Box<[SendSlot]>,
    recv_msg: Box<libc::msghdr>,
    tail: u16,
    /// Ports whose multishot receive ended (buffers ran out, an error): armed again.
    rearm: Vec<usize>,
    wake_armed: bool,
    /// A multishot receive was refused as unsupported: the caller falls back to epoll.
    pub(crate) unsupported: bool,
}

// SAFETY: the raw pointer is the ring's buffer memory, owned by this value and only touched
// through `&mut self`.
unsafe impl Send for Uring {}

fn cmsg_align(n: usize) -> usize {
    (n + 7) & !7
}

impl Uring {
    /// A ring armed on every socket of `socks` and on the waker's eventfd.
    pub(crate) fn new(socks: &[OwnedFd], wake: RawFd) -> io::Result<Uring> {
        let entries = 4096u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(65_536)
            .build(entries)?;
        let br_layout =
            Layout::from_size_align(usize::from(NBUF) * size_of::<BufRingEntry>(), 4096)
                .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: a non-zero-sized layout; checked for null below.
        let br = unsafe { alloc_zeroed(br_layout) }.cast::<BufRingEntry>();
        if br.is_null() {
            return Err(io::Error::other("out of memory for the buffer ring"));
        }
        let mut u = Uring {
            ring,
            br,
            bufs: ManuallyDrop::new(vec![0u8; usize::from(NBUF) * BUFSZ].into_boxed_slice()),
            // SAFETY: SendSlot is plain data; zero is valid.
            slots: (0..NBUF).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: msghdr is plain data; zero is valid.
            recv_msg: Box::new(unsafe { zeroed() }),
            tail: 0,
            rearm: (0..socks.len()).collect(),
            wake_armed: false,
            unsupported: false,
        };
        u.recv_msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        u.recv_msg.msg_controllen = CTL as _;
        // SAFETY: the ring memory is page-aligned, NBUF entries long, and never freed.
        unsafe {
            u.ring
                .submitter()
                .register_buf_ring_with_flags(u.br as u64, NBUF, BGID, 0)?;
        }
        for bid in 0..NBUF {
            u.give_back(bid);
        }
        u.publish();
        u.arm(socks, wake)?;
        Ok(u)
    }

    /// Puts buffer `bid` at the ring's tail (published by [`Uring::publish`]).
    fn give_back(&mut self, bid: u16) {
        let mask = NBUF - 1;
        // SAFETY: `tail & mask` < NBUF entries of the ring memory we own.
        let e = unsafe { &mut *self.br.add(usize::from(self.tail & mask)) };
        e.set_addr(self.bufs[usize::from(bid) * BUFSZ..].as_ptr() as u64);
        e.set_len(BUFSZ as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail field of the first entry, aligned for u16; the kernel reads it.
        unsafe {
            let t = BufRingEntry::tail(self.br).cast::<AtomicU16>();
            (*t).store(self.tail, Ordering::Release);
        }
    }

    /// Pushes one submission, submitting what is queued first when the queue is full.
    fn push(&mut self, e: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed points at memory owned by `self` (the receive msghdr
            // template, a send slot, a buffer) that outlives the operation.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Arms the receives of the ports in `rearm`, and the waker.
    fn arm(&mut self, socks: &[OwnedFd], wake: RawFd) -> io::Result<()> {
        let msg: *const libc::msghdr = &*self.recv_msg;
        for i in std::mem::take(&mut self.rearm) {
            let e = opcode::RecvMsgMulti::new(Fd(socks[i].as_raw_fd()), msg, BGID)
                .build()
                .user_data(i as u64);
            self.push(&e)?;
        }
        if !self.wake_armed {
            let e = opcode::PollAdd::new(Fd(wake), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(WAKE);
            self.push(&e)?;
            self.wake_armed = true;
        }
        Ok(())
    }

    /// One round: submit, wait up to `timeout` for completions, hand each datagram to
    /// `decide`, queue the sends. Returns (datagrams received, woken).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn poll<F>(
        &mut self,
        socks: &[OwnedFd],
        first: u16,
        wake: RawFd,
        timeout: Option<Duration>,
        stats: &mut PortSetStats,
        decide: &mut F,
    ) -> io::Result<(usize, bool)>
    where
        F: FnMut(Datagram<'_>) -> Action,
    {
        self.arm(socks, wake)?;
        let ts = Timespec::from(timeout.unwrap_or(Duration::from_secs(3600)));
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        let cqes: Vec<(u64, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        let mut received = 0;
        let mut woken = false;
        for (ud, res, flags) in cqes {
            if ud == WAKE {
                woken = true;
                let mut v = 0u64;
                // SAFETY: reading 8 bytes into a u64 from the nonblocking eventfd.
                let _ = unsafe { libc::read(wake, (&mut v as *mut u64).cast(), 8) };
                if !cqueue::more(flags) {
                    self.wake_armed = false;
                }
                continue;
            }
            if ud & SEND != 0 {
                let bid = (ud & 0xffff) as u16;
                if res < 0 {
                    stats.send_failed += 1;
                } else {
                    stats.sent += 1;
                }
                self.give_back(bid);
                continue;
            }
            let i = ud as usize;
            if !cqueue::more(flags) {
                self.rearm.push(i);
            }
            if res == -libc::EINVAL || res == -libc::EOPNOTSUPP {
                self.unsupported = true;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                continue;
            };
            if res < 0 {
                self.give_back(bid);
                continue;
            }
            received += 1;
            stats.received += 1;
            match self.datagram(socks, first, i, bid, res as usize, decide) {
                Some(e) => {
                    self.push(&e)?;
                    stats.send_calls += 1;
                }
                None => self.give_back(bid),
            }
        }
        self.publish();
        if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        stats.recv_calls += 1;
        Ok((received, woken))
    }

    /// Parses buffer `bid` (`n` bytes written by the kernel for port `i`), asks `decide`, and
    /// returns the send to queue, if any.
    fn datagram<F>(
        &mut self,
        socks: &[OwnedFd],
        first: u16,
        i: usize,
        bid: u16,
        n: usize,
        decide: &mut F,
    ) -> Option<io_uring::squeue::Entry>
    where
        F: FnMut(Datagram<'_>) -> Action,
    {
        let start = usize::from(bid) * BUFSZ;
        let (src, opts, olen, plen, truncated) = {
            let out =
                RecvMsgOut::parse(&self.bufs[start..start + n.min(BUFSZ)], &self.recv_msg).ok()?;
            let name = out.name_data();
            if name.len() < 8 {
                return None;
            }
            let src = SocketAddrV4::new(
                Ipv4Addr::new(name[4], name[5], name[6], name[7]),
                u16::from_be_bytes([name[2], name[3]]),
            );
            let mut opts = [0u8; MAX_OPTIONS_LEN];
            let mut olen = 0;
            let ctl = out.control_data();
            let mut off = 0;
            while off + 16 <= ctl.len() {
                let len = usize::from_ne_bytes(ctl[off..off + 8].try_into().ok()?);
                let level = i32::from_ne_bytes(ctl[off + 8..off + 12].try_into().ok()?);
                let kind = i32::from_ne_bytes(ctl[off + 12..off + 16].try_into().ok()?);
                if len < 16 || off + len > ctl.len() {
                    break;
                }
                let data = &ctl[off + 16..off + len];
                if level == libc::IPPROTO_IP
                    && (kind == libc::IP_OPTIONS || kind == libc::IP_RECVOPTS)
                {
                    olen = data.len().min(MAX_OPTIONS_LEN);
                    opts[..olen].copy_from_slice(&data[..olen]);
                }
                off += cmsg_align(len);
            }
            (
                src,
                opts,
                olen,
                out.payload_data().len(),
                out.is_payload_truncated(),
            )
        };
        if truncated {
            return None;
        }
        let at = start + FRONT;
        let d = Datagram {
            port: first + i as u16,
            src: SocketAddr::V4(src),
            options: &opts[..olen],
            buf: &mut self.bufs[at..start + BUFSZ],
            len: plen,
        };
        let Action::Send {
            out_port,
            dst,
            len,
            options,
        } = decide(d)
        else {
            return None;
        };
        let o = usize::from(out_port.checked_sub(first)?);
        let sock = socks.get(o)?.as_raw_fd();
        let len = len.min(BUF_LEN);
        let payload = self.bufs[at..].as_mut_ptr();
        let slot = &mut self.slots[usize::from(bid)];
        slot.dst = crate::portset::sockaddr(dst);
        slot.iov = libc::iovec {
            iov_base: payload.cast(),
            iov_len: len,
        };
        // SAFETY: msghdr is plain data.
        slot.msg = unsafe { zeroed() };
        slot.msg.msg_name = (&mut slot.dst as *mut libc::sockaddr_in).cast();
        slot.msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        slot.msg.msg_iov = &mut slot.iov;
        slot.msg.msg_iovlen = 1;
        let op = options.as_slice();
        if !op.is_empty() {
            // One control message: IP_RETOPTS with the option bytes.
            let clen = 16 + op.len();
            slot.ctl[..8].copy_from_slice(&clen.to_ne_bytes());
            slot.ctl[8..12].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
            slot.ctl[12..16].copy_from_slice(&libc::IP_RETOPTS.to_ne_bytes());
            slot.ctl[16..clen].copy_from_slice(op);
            slot.msg.msg_control = slot.ctl.as_mut_ptr().cast();
            slot.msg.msg_controllen = cmsg_align(clen) as _;
        }
        Some(
            opcode::SendMsg::new(Fd(sock), &slot.msg)
                .build()
                .user_data(SEND | u64::from(bid)),
        )
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Closing the ring cancels what is in flight asynchronously: a receive may still land
        // in a buffer afterwards. The buffers (and the buffer ring) are therefore left
        // allocated (`ManuallyDrop`, never deallocated): a few MiB once per relay, at exit.
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}
