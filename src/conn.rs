//! One client connection as the hub sees it: its protocol state, its input
//! buffer and its output queue of shared frames. The socket itself belongs
//! to the reactor.
//!
//! The output queue holds reference-counted frames (an event is framed once
//! and shared by every subscriber that receives it) plus the offset into the
//! first one, and is flushed with vectored writes of at most 64 slices.
//! The hub bounds it: a connection whose queue passes its cap, or whose
//! socket takes nothing for the write timeout, is dropped.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::IpAddr;
use std::time::Instant;

use crate::acl::Grant;
use crate::event::{Event, Frame, Framing};
use crate::http::{BodyDecoder, RequestHead};
use crate::topics::Subscription;

/// Most slices handed to one `write_vectored` call.
const MAX_SLICES: usize = 64;

/// Pending output bytes, as shared frames.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Frame>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Unwritten bytes in total.
    queued: usize,
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub written: usize,
    /// The socket would block with bytes still queued.
    pub blocked: bool,
}

impl OutQueue {
    pub fn push(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Writes until the queue is empty or the writer would block.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<Flushed> {
        let mut written = 0;
        while !self.frames.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for (i, frame) in self.frames.iter().take(MAX_SLICES).enumerate() {
                    let start = if i == 0 { self.offset } else { 0 };
                    slices[i] = IoSlice::new(&frame[start..]);
                    n += 1;
                }
                w.write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed {
                        written,
                        blocked: true,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed {
            written,
            blocked: false,
        })
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                debug_assert!(false, "advanced past the queue");
                return;
            };
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.frames.pop_front();
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a publish body.
    Body(Box<BodyState>),
    /// Parked while LDAP checks the client's credentials.
    Authenticating(Box<Pending>),
    /// A publish parked until the cluster's stream acknowledged its event
    /// (the append's token; see `hub/cluster.rs`).
    Appending(u64),
    /// An open event stream.
    Stream(Box<Stream>),
    /// The last response is queued; input is ignored and the connection
    /// closes once the output is flushed.
    Closing,
}

/// A publish whose body is arriving.
#[derive(Debug)]
pub struct BodyState {
    pub head: RequestHead,
    /// The path's topics, `private` included.
    pub path_topics: Vec<String>,
    pub decoder: BodyDecoder,
    pub body: Vec<u8>,
    pub grant: Option<Grant>,
}

/// A request waiting for its credentials to be checked.
#[derive(Debug)]
pub struct Pending {
    pub head: RequestHead,
    pub then: AfterAuth,
}

/// What a parked request goes on to do.
#[derive(Debug)]
pub enum AfterAuth {
    Subscribe(Subscription),
    /// The body has not been read yet; the path's topics.
    Publish(Vec<String>),
}

/// A live subscriber.
#[derive(Debug)]
pub struct Stream {
    pub sub: Subscription,
    pub framing: Framing,
    /// What its credentials allow it to see of private events.
    pub grant: Option<Grant>,
    /// While replaying the backlog: the sequence number to send next. Live
    /// events are not queued meanwhile; the replay reaches them in the
    /// backlog, so nothing is lost or sent twice at the seam.
    pub replay: Option<u64>,
}

impl Stream {
    /// Whether this subscriber should receive the event: its topics match,
    /// and a private event is covered by one of its ACL segments.
    pub fn wants(&self, event: &Event) -> bool {
        self.sub.matches(&event.topics)
            && (!event.private
                || self
                    .grant
                    .as_ref()
                    .is_some_and(|g| g.can_see(&event.topics)))
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    /// Distinguishes this connection from later ones that reuse its slab key.
    pub serial: u64,
    /// The peer address, IPv4-mapped IPv6 folded to IPv4.
    pub peer: IpAddr,
    pub state: State,
    /// Bytes read but not yet parsed.
    pub inbuf: Vec<u8>,
    pub out: OutQueue,
    /// When the request being read must be complete.
    pub request_deadline: Option<Instant>,
    /// When the socket last accepted bytes (for the stall timeout).
    pub last_progress: Instant,
    /// A request-deadline check is scheduled for this connection.
    pub request_timer_armed: bool,
    /// A stall check is scheduled for this connection.
    pub stall_timer_armed: bool,
    /// Closing at the end of this turn; nothing more is queued or read.
    pub doomed: bool,
    /// Already on the hub's flush list this turn.
    pub dirty: bool,
    /// Already on the hub's list of connections with work left over.
    pub pending: bool,
    /// Input processing stopped until the output queue drains.
    pub paused: bool,
    /// The peer closed its side, or input is over for us.
    pub read_closed: bool,
    /// The sequence number of the last event this connection was matched
    /// against (de-duplicates index candidates).
    pub last_event_seen: u64,
    /// Bytes received while streaming (ignored, but bounded).
    pub stream_input: usize,
    /// Input buffer bytes (request head and body) last counted against the
    /// hub's input budget.
    pub held_input: usize,
    /// Accepted on the admin listener: only the admin endpoints answer.
    pub admin: bool,
    /// The current request's `Origin` is in `clients.cors_origins` (its
    /// index there): responses carry the CORS headers.
    pub cors: Option<u16>,
}

impl Conn {
    pub fn new(serial: u64, peer: IpAddr, now: Instant) -> Conn {
        Conn {
            serial,
            peer,
            state: State::Head,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            request_deadline: None,
            last_progress: now,
            request_timer_armed: false,
            stall_timer_armed: false,
            doomed: false,
            dirty: false,
            pending: false,
            paused: false,
            read_closed: false,
            last_event_seen: 0,
            stream_input: 0,
            held_input: 0,
            admin: false,
            cors: None,
        }
    }

    /// Marks the connection to be closed at the end of the turn without
    /// flushing, freeing its output. Returns false if it already was.
    pub fn doom(&mut self) -> bool {
        if self.doomed {
            return false;
        }
        self.doomed = true;
        self.read_closed = true;
        self.out = OutQueue::default();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A writer that accepts at most `budget` bytes, then would block.
    struct Throttled {
        got: Vec<u8>,
        budget: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget);
            self.got.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flushes_across_frames_and_resumes_mid_frame() {
        let mut q = OutQueue::default();
        let shared: Frame = Rc::from(&b"hello "[..]);
        q.push(shared.clone());
        q.push(Rc::from(&b""[..]));
        q.push(Rc::from(&b"world"[..]));
        assert_eq!(q.queued(), 11);
        let mut w = Throttled {
            got: Vec::new(),
            budget: 8,
        };
        assert_eq!(
            q.flush_to(&mut w).unwrap(),
            Flushed {
                written: 8,
                blocked: true
            }
        );
        assert_eq!(q.queued(), 3);
        w.budget = 100;
        assert_eq!(
            q.flush_to(&mut w).unwrap(),
            Flushed {
                written: 3,
                blocked: false
            }
        );
        assert_eq!(w.got, b"hello world");
        assert!(q.is_empty());
        assert_eq!(Rc::strong_count(&shared), 1);
    }

    #[test]
    fn many_frames_need_several_vectored_writes() {
        let mut q = OutQueue::default();
        for i in 0..200u8 {
            q.push(Rc::from(vec![i]));
        }
        let mut w = Throttled {
            got: Vec::new(),
            budget: usize::MAX,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.got, (0..200u8).collect::<Vec<_>>());
    }
}
