package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"

	"github.com/cockroachdb/pebble"

	"github.com/parley-im/parley/storage"
)

// AppendMessages implements storage.Store. All messages and their client-id
// index entries go into one pebble batch, committed with a WAL sync.
// Concurrent calls share syncs: pebble's commit pipeline queues every batch
// that arrives while a sync is running and covers them all with the next one.
//
// Each message claims its (conv, seq): under the seq's stripe lock the
// stored message (one point read) and the claims of calls still committing
// are checked, and the claim is registered; the lock is not held across the
// sync, so group commit is kept. A seq held by another message (another
// sender or client id) fails the whole call with storage.ErrConflict.
func (s *Store) AppendMessages(ctx context.Context, msgs []storage.Message) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if len(msgs) == 0 {
		return nil
	}
	for i := range msgs {
		if msgs[i].Seq == 0 {
			return fmt.Errorf("embedded: message of %q has seq 0", msgs[i].Conv)
		}
	}
	claimed, err := s.claim(msgs)
	if err != nil {
		return err
	}
	defer s.release(msgs, claimed)

	b := s.db.NewBatch()
	defer b.Close()
	for i := range msgs {
		m := &msgs[i]
		// Encode straight into the batch: no scratch buffer, no copy.
		op := b.SetDeferred(messageKeyLen(m.Conv), messageLen(m))
		if err := fill(op, appendMessageKey(op.Key[:0], m.Conv, m.Seq), appendMessage(op.Value[:0], m)); err != nil {
			return err
		}
		if m.CMID == "" {
			continue
		}
		op = b.SetDeferred(clientIDKeyLen(m.Conv, m.Sender, m.CMID), 8)
		if err := fill(op, appendClientIDKey(op.Key[:0], m.Conv, m.Sender, m.CMID), binary.BigEndian.AppendUint64(op.Value[:0], m.Seq)); err != nil {
			return err
		}
	}
	return s.commit(b)
}

// seqClaim is a (conv, seq) being stored by a call that has not returned.
type seqClaim struct {
	conv string
	seq  uint64
}

// claimOwner identifies the message a claim is for: a retry of the same
// message (same sender and client id) may claim it again.
type claimOwner struct {
	sender, cmid string
	n            int // concurrent claims by calls storing this same message
}

func (s *Store) seqStripe(conv string, seq uint64) int {
	return int((maphash.String(s.seed, conv) + seq) % uint64(len(s.seqLocks)))
}

// claim registers msgs' seqs, or fails with storage.ErrConflict and
// registers none. claimed[i] reports whether msgs[i]'s claim is registered
// (a message listed twice in one call is claimed once).
func (s *Store) claim(msgs []storage.Message) (claimed []bool, err error) {
	claimed = make([]bool, len(msgs))
	defer func() {
		if err != nil {
			s.release(msgs, claimed)
			claimed = nil
		}
	}()
	for i := range msgs {
		m := &msgs[i]
		stripe := s.seqStripe(m.Conv, m.Seq)
		key := seqClaim{m.Conv, m.Seq}
		s.seqLocks[stripe].Lock()
		owner, pending := s.claims[stripe][key]
		switch {
		case pending && (owner.sender != m.Sender || owner.cmid != m.CMID):
			err = storage.ErrConflict
		case pending && claimedEarlier(msgs[:i], claimed[:i], key):
			// Listed twice in this call: claimed already.
		default:
			if err = s.checkStoredLocked(m); err == nil {
				if s.claims[stripe] == nil {
					s.claims[stripe] = make(map[seqClaim]*claimOwner)
				}
				if !pending {
					owner = &claimOwner{sender: m.Sender, cmid: m.CMID}
					s.claims[stripe][key] = owner
				}
				owner.n++
				claimed[i] = true
			}
		}
		s.seqLocks[stripe].Unlock()
		if err != nil {
			return claimed, err
		}
	}
	return claimed, nil
}

func claimedEarlier(msgs []storage.Message, claimed []bool, key seqClaim) bool {
	for i := range msgs {
		if claimed[i] && msgs[i].Conv == key.conv && msgs[i].Seq == key.seq {
			return true
		}
	}
	return false
}

// checkStoredLocked fails with storage.ErrConflict if m's seq holds another
// message. The caller holds m's seq stripe lock.
func (s *Store) checkStoredLocked(m *storage.Message) error {
	v, closer, err := s.db.Get(appendMessageKey(nil, m.Conv, m.Seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("embedded: get: %w", err)
	}
	defer closer.Close()
	old, err := decodeMessage(m.Conv, m.Seq, v)
	if err != nil {
		return fmt.Errorf("embedded: message %q/%d: %w", m.Conv, m.Seq, err)
	}
	if old.Sender != m.Sender || old.CMID != m.CMID {
		return storage.ErrConflict
	}
	return nil
}

// release drops the claims registered by claim.
func (s *Store) release(msgs []storage.Message, claimed []bool) {
	for i := range msgs {
		if !claimed[i] {
			continue
		}
		m := &msgs[i]
		stripe := s.seqStripe(m.Conv, m.Seq)
		key := seqClaim{m.Conv, m.Seq}
		s.seqLocks[stripe].Lock()
		if owner := s.claims[stripe][key]; owner != nil {
			if owner.n--; owner.n <= 0 {
				delete(s.claims[stripe], key)
			}
		}
		s.seqLocks[stripe].Unlock()
	}
}

// fill finishes a deferred set whose key and value were appended in place.
// A length that differs from the reserved one would corrupt the batch; it
// means a length function disagrees with its encoder.
func fill(op *pebble.DeferredBatchOp, k, v []byte) error {
	if len(k) != len(op.Key) || len(v) != len(op.Value) || &k[0] != &op.Key[0] || &v[0] != &op.Value[0] {
		panic("embedded: encoded length differs from reserved length")
	}
	return op.Finish()
}

// LookupClientID implements storage.Store.
func (s *Store) LookupClientID(ctx context.Context, conv, sender, cmid string) (uint64, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leave()

	v, closer, err := s.db.Get(appendClientIDKey(nil, conv, sender, cmid))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, storage.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("embedded: get: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("embedded: client id %q/%q/%q: %w", conv, sender, cmid, errBadValue)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Messages implements storage.Store. The page is one bounded range scan:
// forward from After+1 when After is set, otherwise backward from Before.
func (s *Store) Messages(ctx context.Context, conv string, p storage.Page) ([]storage.Message, error) {
	limit := p.Limit
	switch {
	case limit <= 0:
		limit = storage.DefaultPage
	case limit > storage.MaxPage:
		limit = storage.MaxPage
	}
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if p.After == math.MaxUint64 || (p.Before > 0 && p.Before <= p.After+1) {
		return nil, nil // empty range
	}

	prefix := messagesPrefix(conv)
	lower, upper := prefix, prefixEnd(prefix)
	if p.After > 0 {
		lower = appendMessageKey(nil, conv, p.After+1)
	}
	if p.Before > 0 {
		upper = appendMessageKey(nil, conv, p.Before)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("embedded: iterator: %w", err)
	}
	out := make([]storage.Message, 0, min(limit, 128))
	forward := p.After > 0
	ok := false
	if forward {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	for ; ok && len(out) < limit; ok = step(it, forward) {
		seq, err := messageKeySeq(it.Key(), len(prefix))
		if err != nil {
			it.Close()
			return nil, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("embedded: read: %w", err)
		}
		m, err := decodeMessage(conv, seq, v)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("embedded: message %q/%d: %w", conv, seq, err)
		}
		out = append(out, m)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("embedded: iterate: %w", err)
	}
	if !forward {
		slices.Reverse(out)
	}
	return out, nil
}

func step(it *pebble.Iterator, forward bool) bool {
	if forward {
		return it.Next()
	}
	return it.Prev()
}

// LastSeq implements storage.Store: one reverse seek to the last key of the
// conversation's message range.
func (s *Store) LastSeq(ctx context.Context, conv string) (uint64, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leave()

	prefix := messagesPrefix(conv)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, fmt.Errorf("embedded: iterator: %w", err)
	}
	var seq uint64
	if it.Last() {
		seq, err = messageKeySeq(it.Key(), len(prefix))
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("embedded: iterate: %w", cerr)
	}
	return seq, err
}
