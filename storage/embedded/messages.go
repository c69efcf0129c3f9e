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
// Each message claims its (conv, seq) and its client id: under a stripe
// lock the stored value (one point read each) and the claims of calls still
// committing are checked, and the claim is registered; the lock is not held
// across the sync, so group commit is kept. A seq held by another message,
// or a client id stored at another seq, fails the whole call with
// storage.ErrConflict: two nodes never give one seq to two messages, nor
// one client message two seqs.
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
	var one [1]bool
	claimed := one[:]
	if len(msgs) > 1 {
		claimed = make([]bool, len(msgs))
	}
	if err := s.claim(msgs, claimed); err != nil {
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

// claimKey is what a call that has not returned is storing: a message's
// (conv, seq), or its client id (conv, sender, cmid) with seq 0.
type claimKey struct {
	conv, sender, cmid string
	seq                uint64
}

// claimOwner identifies who holds a claim: for a seq, the message (sender
// and client id); for a client id, the seq. A retry of the same message may
// claim again; n counts the calls holding the claim.
type claimOwner struct {
	sender, cmid string
	seq          uint64
	n            int
}

// claimsOf returns m's claim keys: its seq, and its client id if it has one.
func claimsOf(m *storage.Message) (keys [2]claimKey, n int) {
	keys[0] = claimKey{conv: m.Conv, seq: m.Seq}
	if m.CMID == "" {
		return keys, 1
	}
	keys[1] = claimKey{conv: m.Conv, sender: m.Sender, cmid: m.CMID}
	return keys, 2
}

func (s *Store) claimStripe(k claimKey) int {
	h := maphash.String(s.seed, k.conv) + k.seq + maphash.String(s.seed, k.cmid)
	return int(h % uint64(len(s.seqLocks)))
}

// claim registers msgs' seqs and client ids, or fails with
// storage.ErrConflict and registers none: a seq that holds (or is being
// given) another message, or a client id stored (or being stored) at
// another seq. claimed[i] reports whether msgs[i]'s claims are registered
// (a message listed twice in one call is claimed once). claimed has room
// for len(msgs).
func (s *Store) claim(msgs []storage.Message, claimed []bool) (err error) {
	defer func() {
		if err != nil {
			s.release(msgs, claimed)
		}
	}()
	for i := range msgs {
		m := &msgs[i]
		if claimedEarlier(msgs[:i], claimed[:i], m) {
			continue
		}
		keys, nk := claimsOf(m)
		for j, k := range keys[:nk] {
			stripe := s.claimStripe(k)
			s.seqLocks[stripe].Lock()
			owner, held := s.claims[stripe][k]
			if held && !owner.is(m, k) {
				err = storage.ErrConflict
			} else if err = s.checkStoredLocked(m, k); err == nil {
				if !held {
					if s.claims[stripe] == nil {
						s.claims[stripe] = make(map[claimKey]claimOwner)
					}
					owner = claimOwner{sender: m.Sender, cmid: m.CMID, seq: m.Seq}
				}
				owner.n++
				s.claims[stripe][k] = owner
			}
			s.seqLocks[stripe].Unlock()
			if err != nil {
				s.releaseKeys(keys[:j])
				return err
			}
		}
		claimed[i] = true
	}
	return nil
}

// is reports whether the claim on k is held for m.
func (o claimOwner) is(m *storage.Message, k claimKey) bool {
	if k.cmid != "" {
		return o.seq == m.Seq
	}
	return o.sender == m.Sender && o.cmid == m.CMID
}

func claimedEarlier(msgs []storage.Message, claimed []bool, m *storage.Message) bool {
	for i := range msgs {
		if claimed[i] && msgs[i].Conv == m.Conv && msgs[i].Seq == m.Seq && msgs[i].Sender == m.Sender && msgs[i].CMID == m.CMID {
			return true
		}
	}
	return false
}

// checkStoredLocked fails with storage.ErrConflict if what is stored under
// k belongs to another message than m. The caller holds k's stripe lock.
func (s *Store) checkStoredLocked(m *storage.Message, k claimKey) error {
	var buf [256]byte
	var dbKey []byte
	if k.cmid != "" {
		dbKey = appendClientIDKey(buf[:0], m.Conv, m.Sender, m.CMID)
	} else {
		dbKey = appendMessageKey(buf[:0], m.Conv, m.Seq)
	}
	v, closer, err := s.db.Get(dbKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("embedded: get: %w", err)
	}
	defer closer.Close()
	if k.cmid != "" {
		if len(v) != 8 {
			return fmt.Errorf("embedded: client id %q/%q/%q: %w", m.Conv, m.Sender, m.CMID, errBadValue)
		}
		if binary.BigEndian.Uint64(v) != m.Seq {
			return storage.ErrConflict
		}
		return nil
	}
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
		if claimed[i] {
			keys, n := claimsOf(&msgs[i])
			s.releaseKeys(keys[:n])
		}
	}
}

func (s *Store) releaseKeys(keys []claimKey) {
	for _, k := range keys {
		stripe := s.claimStripe(k)
		s.seqLocks[stripe].Lock()
		if owner, ok := s.claims[stripe][k]; ok {
			if owner.n--; owner.n <= 0 {
				delete(s.claims[stripe], k)
			} else {
				s.claims[stripe][k] = owner
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
