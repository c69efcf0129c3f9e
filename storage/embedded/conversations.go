package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/parley-im/parley/storage"
)

// CreateConversation implements storage.Store. Each member's Conv is taken
// to be c.ID. The conversation, its members and their user_convs entries are
// one batch: either all of them are stored or none.
func (s *Store) CreateConversation(ctx context.Context, c storage.Conversation, members []storage.Member) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	cv, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("embedded: encode conversation: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	ck := convKey(c.ID)
	if err := b.Set(ck, cv, nil); err != nil {
		return err
	}
	for _, m := range members {
		m.Conv = c.ID
		mv, err := encodeMember(m)
		if err != nil {
			return fmt.Errorf("embedded: encode member: %w", err)
		}
		if err := b.Set(memberKey(c.ID, m.User), mv, nil); err != nil {
			return err
		}
		if err := b.Set(userConvKey(m.User, c.ID), nil, nil); err != nil {
			return err
		}
	}

	// The conversation lock makes the existence check and the write one
	// step; the member locks keep a concurrent PutMember or SetWatermark on
	// one of the new members from interleaving with it.
	cl := s.convLock(c.ID)
	cl.Lock()
	defer cl.Unlock()
	unlock := s.lockMembers(c.ID, members)
	defer unlock()

	if _, err := s.get(ck); err == nil {
		return storage.ErrExists
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return s.commit(b)
}

// lockMembers locks the member stripes of conv's users in ascending order
// and returns the function that unlocks them.
func (s *Store) lockMembers(conv string, members []storage.Member) (unlock func()) {
	stripes := make([]int, 0, len(members))
	for _, m := range members {
		stripes = append(stripes, s.memberStripe(conv, m.User))
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	locked := make([]*sync.Mutex, 0, len(stripes))
	for _, i := range stripes {
		s.memberLocks[i].Lock()
		locked = append(locked, &s.memberLocks[i])
	}
	return func() {
		for _, mu := range locked {
			mu.Unlock()
		}
	}
}

// Conversation implements storage.Store.
func (s *Store) Conversation(ctx context.Context, id string) (storage.Conversation, error) {
	if err := s.enter(ctx); err != nil {
		return storage.Conversation{}, err
	}
	defer s.leave()
	return s.conversation(id)
}

func (s *Store) conversation(id string) (storage.Conversation, error) {
	v, err := s.get(convKey(id))
	if err != nil {
		return storage.Conversation{}, err
	}
	var c storage.Conversation
	if err := json.Unmarshal(v, &c); err != nil {
		return storage.Conversation{}, fmt.Errorf("embedded: decode conversation %q: %w", id, err)
	}
	return c, nil
}

// SetTitle implements storage.Store.
func (s *Store) SetTitle(ctx context.Context, id, title string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	cl := s.convLock(id)
	cl.Lock()
	defer cl.Unlock()
	c, err := s.conversation(id)
	if err != nil {
		return err
	}
	if c.Title == title {
		return nil
	}
	c.Title = title
	cv, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("embedded: encode conversation: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(convKey(id), cv, nil); err != nil {
		return err
	}
	return s.commit(b)
}
