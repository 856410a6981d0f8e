//! The relay's UDP ports: `count` ports from `first` (even), handed out in pairs (RTP on the
//! even port, RTCP on the next odd one, RFC 3550 §11). Freed pairs go to the back of the queue,
//! so a port just released (whose late packets may still arrive) is reused last.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct PortPool {
    first: u16,
    count: u16,
    /// One past the last port of the range.
    end: u32,
    free: VecDeque<u16>,
}

impl PortPool {
    /// `first` is rounded up to even; the pool holds the pairs that fit in `count` ports.
    pub fn new(first: u16, count: u16) -> Self {
        // The range is first..first + count as given; pairs start on the even ports in it.
        let end = u32::from(first) + u32::from(count);
        let first = first.saturating_add(first % 2);
        let free = (u32::from(first)..end.min(65_536))
            .step_by(2)
            .filter(|p| p + 1 < end.min(65_536))
            .map(|p| p as u16)
            .collect();
        PortPool {
            first,
            count,
            end,
            free,
        }
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    /// Pairs left.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// An even port whose odd neighbour is free too.
    pub fn alloc(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    pub fn release(&mut self, even: u16) {
        if even.is_multiple_of(2)
            && even >= self.first
            && u32::from(even) + 1 < self.end
            && !self.free.contains(&even)
        {
            self.free.push_back(even);
        }
    }

    /// Whether `port` belongs to the pool.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && u32::from(port) < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_reused_last() {
        // 20001..=20007: the pairs 20002/3, 20004/5, 20006/7.
        let mut p = PortPool::new(20_001, 7);
        assert_eq!(p.first(), 20_002);
        assert_eq!(p.available(), 3);
        // 20001..=20008: the same three pairs (20008's odd neighbour is outside).
        assert_eq!(PortPool::new(20_001, 8).available(), 3);
        let a = p.alloc().unwrap();
        assert_eq!(a, 20_002);
        let b = p.alloc().unwrap();
        p.release(a);
        p.release(a); // twice: once in the pool
        p.release(20_003); // odd: ignored
        assert_eq!(p.alloc(), Some(20_006));
        assert_eq!(p.alloc(), Some(a));
        assert_eq!(p.alloc(), None);
        assert!(p.contains(b) && !p.contains(20_000));
        let top = PortPool::new(65_530, 100);
        assert_eq!(top.available(), 3);
    }
}
