//! An intrusive doubly linked list of free block ids (vLLM's `FreeKVCacheBlockQueue`).
//!
//! O(1) push at either end, pop at the front and removal from the middle (when a cached free
//! block is revived by a prefix hit). The front is the next block handed out; the back holds
//! the most recently freed cached blocks, so the front is also the least recently used.

use brisk_types::BlockId;

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub(crate) struct FreeList {
    prev: Vec<u32>,
    next: Vec<u32>,
    in_list: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeList {
    /// A list holding every block `0..n`, in order.
    pub(crate) fn full(n: usize) -> Self {
        let mut list = Self {
            prev: vec![NIL; n],
            next: vec![NIL; n],
            in_list: vec![false; n],
            head: NIL,
            tail: NIL,
            len: 0,
        };
        for b in 0..n {
            list.push_back(BlockId::try_from(b).expect("pools hold fewer than u32::MAX blocks"));
        }
        list
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, b: BlockId) -> bool {
        self.in_list[b as usize]
    }

    pub(crate) fn push_back(&mut self, b: BlockId) {
        debug_assert!(!self.contains(b));
        let i = b as usize;
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.in_list[i] = true;
        self.len += 1;
    }

    pub(crate) fn push_front(&mut self, b: BlockId) {
        debug_assert!(!self.contains(b));
        let i = b as usize;
        self.next[i] = self.head;
        self.prev[i] = NIL;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.prev[self.head as usize] = b;
        }
        self.head = b;
        self.in_list[i] = true;
        self.len += 1;
    }

    pub(crate) fn pop_front(&mut self) -> Option<BlockId> {
        if self.head == NIL {
            return None;
        }
        let b = self.head;
        self.remove(b);
        Some(b)
    }

    pub(crate) fn remove(&mut self, b: BlockId) {
        debug_assert!(self.contains(b));
        let i = b as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.in_list[i] = false;
        self.len -= 1;
    }

    /// The blocks from front to back.
    pub(crate) fn iter(&self) -> impl Iterator<Item = BlockId> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let b = cur;
            cur = self.next[b as usize];
            Some(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_pops_and_removes_in_order() {
        let mut l = FreeList::full(4);
        assert_eq!(l.iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        l.remove(2);
        l.push_front(2);
        l.remove(0);
        l.push_back(0);
        assert_eq!(l.iter().collect::<Vec<_>>(), [2, 1, 3, 0]);
        assert_eq!(l.pop_front(), Some(2));
        l.remove(0);
        l.remove(1);
        assert_eq!(l.iter().collect::<Vec<_>>(), [3]);
        assert_eq!(l.pop_front(), Some(3));
        assert_eq!(l.pop_front(), None);
        assert_eq!(l.len(), 0);
    }
}
