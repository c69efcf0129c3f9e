package hub

import (
	"context"
	"sync"
	"time"

	"github.com/parley-im/parley/storage"
)

// ownMarks raises a sender's read watermark to the messages they send, so
// their own messages never count as unread on their other devices. The
// updates are batched off the send path (an ack must not wait for a second
// synced write) and flushed every markInterval; losing the last interval in
// a crash only makes a few own messages look unread.
type ownMarks struct {
	h    *Hub
	mu   sync.Mutex
	next map[markKey]uint64 // guarded by mu: the highest seq per (conv, user)
	stop chan struct{}
	done chan struct{}
}

type markKey struct{ conv, user string }

const markInterval = 100 * time.Millisecond

func (m *ownMarks) init(h *Hub) {
	m.h = h
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
}

func (m *ownMarks) add(conv, user string, seq uint64) {
	m.mu.Lock()
	if m.next == nil {
		m.next = make(map[markKey]uint64)
	}
	k := markKey{conv, user}
	if seq > m.next[k] {
		m.next[k] = seq
	}
	m.mu.Unlock()
}

// run flushes every markInterval until stopped, then flushes once more.
func (m *ownMarks) run() {
	defer close(m.done)
	t := time.NewTicker(markInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			m.flush()
			return
		case <-t.C:
			m.flush()
		}
	}
}

func (m *ownMarks) flush() {
	m.mu.Lock()
	batch := m.next
	m.next = nil
	m.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, seq := range batch {
		for _, kind := range []storage.ReceiptKind{storage.ReceiptDelivered, storage.ReceiptRead} {
			// ErrNotFound: the sender left meanwhile; nothing to mark.
			if err := m.h.store.SetWatermark(ctx, k.conv, k.user, kind, seq); err != nil && ctx.Err() == nil {
				m.h.log.Debug("own watermark not stored", "conv", k.conv, "err", err)
			}
		}
	}
}

func (m *ownMarks) close() {
	close(m.stop)
	<-m.done
}
