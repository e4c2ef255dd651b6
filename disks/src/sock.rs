//! Socket options that neither the standard library nor socket2 offers.

use std::os::fd::{AsFd, AsRawFd};

/// Sets a socket's receive low-water mark (`SO_RCVLOWAT`): the socket is reported readable,
/// and a reader woken, only once `bytes` are queued (or the peer closed, or the receive
/// buffer is full). TCP honours it for `epoll` too, so a reader of a large body is woken once
/// per `bytes` instead of at every arriving segment. `bytes` is at least 1 (the default).
///
/// For sockets read through readiness (epoll, as tokio does): a *blocking* read that has
/// taken part of the mark is not woken by the rest. The caller must never ask for more than
/// the peer will certainly send, or its reader waits for bytes that do not come. Linux grows
/// the receive buffer to hold the mark when it is larger than half of it, and then clamps the
/// advertised window to the mark: keep the mark below a quarter of `SO_RCVBUF` to leave the
/// window alone.
pub fn set_recv_lowat(fd: impl AsFd, bytes: usize) -> std::io::Result<()> {
    let v = bytes.clamp(1, i32::MAX as usize) as libc::c_int;
    // SAFETY: the descriptor is borrowed, so open for the call; the option value points to a
    // live c_int whose size is the length given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn lowat(s: &std::net::TcpStream) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the stream is open; v and len are live and len is v's size.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
        v
    }

    /// Whether the socket is readable within `ms` (poll(2), as epoll reports it).
    fn readable(s: &std::net::TcpStream, ms: i32) -> bool {
        let mut p = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, the count given.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
        r == 1 && p.revents & libc::POLLIN != 0
    }

    #[test]
    fn the_socket_is_readable_only_once_the_mark_is_queued() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut tx = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut rx, _) = l.accept().expect("accept");
        set_recv_lowat(&rx, 1000).expect("set");
        assert_eq!(lowat(&rx), 1000);
        tx.write_all(&[1u8; 600]).expect("write");
        assert!(!readable(&rx, 200), "readable with 600 bytes queued, under the mark");
        tx.write_all(&[2u8; 600]).expect("write");
        assert!(readable(&rx, 5000), "not readable with 1200 bytes queued");
        // (Only readiness waits for the mark: a non-blocking read takes what is queued. A
        // blocking read that has taken part of the mark is not woken by the rest: podstore
        // reads only through readiness.)
        rx.set_nonblocking(true).expect("nonblocking");
        let mut b = vec![0u8; 4000];
        assert_eq!(rx.read(&mut b).expect("read"), 1200);
        tx.write_all(&[3u8; 10]).expect("write");
        assert!(!readable(&rx, 100), "10 bytes are under the mark");
        // Lowering the mark to what is queued makes the socket readable at once.
        set_recv_lowat(&rx, 0).expect("set");
        assert_eq!(lowat(&rx), 1, "0 is the default, 1");
        assert!(readable(&rx, 5000), "the lowered mark is met by what is queued");
        assert!(set_recv_lowat(std::fs::File::open("/dev/null").expect("null"), 10).is_err(), "not a socket");
    }
}
