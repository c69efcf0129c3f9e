package embedded

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/parley-im/parley/storage"
)

// PutMember implements storage.Store. An existing member keeps its
// watermarks, and its JoinedAt when m.JoinedAt is zero.
func (s *Store) PutMember(ctx context.Context, m storage.Member) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	mu := &s.memberLocks[s.memberStripe(m.Conv, m.User)]
	mu.Lock()
	defer mu.Unlock()
	old, err := s.member(m.Conv, m.User)
	switch {
	case err == nil:
		m.DeliveredSeq, m.ReadSeq = old.DeliveredSeq, old.ReadSeq
		if m.JoinedAt.IsZero() {
			m.JoinedAt = old.JoinedAt
		}
		if m.Role == old.Role && m.JoinedAt.Equal(old.JoinedAt) {
			return nil // nothing changes; skip the sync
		}
	case !errors.Is(err, storage.ErrNotFound):
		return err
	}
	mv, err := encodeMember(m)
	if err != nil {
		return fmt.Errorf("embedded: encode member: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(memberKey(m.Conv, m.User), mv, nil); err != nil {
		return err
	}
	if err := b.Set(userConvKey(m.User, m.Conv), nil, nil); err != nil {
		return err
	}
	return s.commit(b)
}

// RemoveMember implements storage.Store.
func (s *Store) RemoveMember(ctx context.Context, conv, user string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	mu := &s.memberLocks[s.memberStripe(conv, user)]
	mu.Lock()
	defer mu.Unlock()
	if _, err := s.member(conv, user); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(memberKey(conv, user), nil); err != nil {
		return err
	}
	if err := b.Delete(userConvKey(user, conv), nil); err != nil {
		return err
	}
	return s.commit(b)
}

// Member implements storage.Store.
func (s *Store) Member(ctx context.Context, conv, user string) (storage.Member, error) {
	if err := s.enter(ctx); err != nil {
		return storage.Member{}, err
	}
	defer s.leave()
	return s.member(conv, user)
}

func (s *Store) member(conv, user string) (storage.Member, error) {
	v, err := s.get(memberKey(conv, user))
	if err != nil {
		return storage.Member{}, err
	}
	m, err := decodeMember(conv, user, v)
	if err != nil {
		return storage.Member{}, fmt.Errorf("embedded: decode member %q/%q: %w", conv, user, err)
	}
	return m, nil
}

// Members implements storage.Store. Key order is user id order.
func (s *Store) Members(ctx context.Context, conv string) ([]storage.Member, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()

	prefix := membersPrefix(conv)
	var out []storage.Member
	err := s.scan(prefix, func(k, v []byte) error {
		user, rest, err := decodeStr(k[len(prefix):])
		if err != nil || len(rest) != 0 {
			return errBadKey
		}
		m, err := decodeMember(conv, user, v)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// UserConversations implements storage.Store. Key order is conversation id
// order.
func (s *Store) UserConversations(ctx context.Context, user string) ([]string, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()

	prefix := userConvsPrefix(user)
	var out []string
	err := s.scan(prefix, func(k, _ []byte) error {
		conv, rest, err := decodeStr(k[len(prefix):])
		if err != nil || len(rest) != 0 {
			return errBadKey
		}
		out = append(out, conv)
		return nil
	})
	return out, err
}

// SetWatermark implements storage.Store. A seq that does not raise the
// watermark returns nil without writing (and without a sync).
func (s *Store) SetWatermark(ctx context.Context, conv, user string, kind storage.ReceiptKind, seq uint64) (bool, error) {
	if kind != storage.ReceiptDelivered && kind != storage.ReceiptRead {
		return false, fmt.Errorf("embedded: unknown receipt kind %q", kind)
	}
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	defer s.leave()

	mu := &s.memberLocks[s.memberStripe(conv, user)]
	mu.Lock()
	defer mu.Unlock()
	m, err := s.member(conv, user)
	if err != nil {
		return false, err
	}
	w := &m.DeliveredSeq
	if kind == storage.ReceiptRead {
		w = &m.ReadSeq
	}
	if seq <= *w {
		return false, nil
	}
	*w = seq
	mv, err := encodeMember(m)
	if err != nil {
		return false, fmt.Errorf("embedded: encode member: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(memberKey(conv, user), mv, nil); err != nil {
		return false, err
	}
	if err := s.commit(b); err != nil {
		return false, err
	}
	return true, nil
}

// scan calls fn for every key with the given prefix, in key order. k and v
// are only valid during the call.
func (s *Store) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("embedded: iterator: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("embedded: read: %w", err)
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return fmt.Errorf("embedded: scan: %w", err)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("embedded: iterate: %w", err)
	}
	return nil
}
