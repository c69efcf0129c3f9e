package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/parley-im/parley/storage"
)

// Devices are two tables kept in step (keys.go): the device rows, one per
// (user, device), and the token index, one entry per (platform, topic,
// token) naming the device that holds it. Every write keeps this invariant,
// in one synced batch:
//
//	a device row holds token T  <=>  the index entry of T names that device
//
// so a token has at most one holder, and DropToken finds it with one read.
//
// Locking: a device write holds the deviceLocks stripe of every user whose
// rows it reads or changes (the user's device count, the row itself) and of
// every token whose index entry it reads or changes. Which users and tokens
// those are is only known after reading (the token the device held before,
// the device that holds the new token), so lockDevices reads once without
// locks to find them, locks them, reads again and starts over if a
// concurrent write made the call need a stripe it does not hold.

// PutDevice implements storage.Store. It returns an error, storing nothing,
// if d has no User, ID, Token or Topic, a Platform other than "ios" or
// "android", a Token longer than storage.MaxTokenLen or more than
// storage.MaxMuted muted conversations. UpdatedAt is stored in UTC.
func (s *Store) PutDevice(ctx context.Context, d storage.Device) error {
	if err := checkDevice(&d); err != nil {
		return err
	}
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	rowKey := deviceKey(d.User, d.ID)
	tokKey := tokenKey(d.Platform, d.Topic, d.Token)
	val := appendDevice(nil, &d)
	var (
		old         storage.Device // the row of (d.User, d.ID), if hasOld
		oldVal      []byte
		hasOld      bool
		owner       devRef // the device that holds d's token, if hasOwner
		hasOwner    bool
		oldTokenKey []byte // the index key of old's token
	)
	plan := func() ([]int, error) {
		var err error
		oldVal, err = s.get(rowKey)
		hasOld = err == nil
		if hasOld {
			if old, err = decodeDevice(d.User, d.ID, oldVal); err != nil {
				return nil, fmt.Errorf("embedded: decode device %q/%q: %w", d.User, d.ID, err)
			}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		owner, hasOwner, err = s.tokenOwner(tokKey)
		if err != nil {
			return nil, err
		}
		stripes := []int{s.userStripe(d.User), s.tokenStripe(tokKey)}
		if hasOld {
			oldTokenKey = tokenKey(old.Platform, old.Topic, old.Token)
			stripes = append(stripes, s.tokenStripe(oldTokenKey))
		}
		if hasOwner {
			stripes = append(stripes, s.userStripe(owner.user))
		}
		return stripes, nil
	}
	return s.lockDevices(plan, func() error {
		self := devRef{d.User, d.ID}
		if hasOld && hasOwner && owner == self && bytes.Equal(oldVal, val) {
			return nil // nothing changes; skip the sync
		}
		if !hasOld {
			n, err := s.countDevices(d.User)
			if err != nil {
				return err
			}
			if n >= storage.MaxDevicesPerUser {
				return storage.ErrExists
			}
		}
		b := s.db.NewBatch()
		defer b.Close()
		if hasOwner && owner != self {
			// Take the token from its holder: the holder's row goes (the
			// index entry is overwritten below).
			holds, err := s.holds(owner, d.Platform, d.Topic, d.Token)
			if err != nil {
				return err
			}
			if holds {
				if err := b.Delete(deviceKey(owner.user, owner.device), nil); err != nil {
					return err
				}
			}
		}
		if hasOld && !bytes.Equal(oldTokenKey, tokKey) {
			// The device had another token: its index entry goes, unless
			// (against the invariant) it names another device.
			prev, ok, err := s.tokenOwner(oldTokenKey)
			if err != nil {
				return err
			}
			if ok && prev == self {
				if err := b.Delete(oldTokenKey, nil); err != nil {
					return err
				}
			}
		}
		if err := b.Set(rowKey, val, nil); err != nil {
			return err
		}
		if err := b.Set(tokKey, appendTokenOwner(nil, d.User, d.ID), nil); err != nil {
			return err
		}
		return s.commit(b)
	})
}

// checkDevice rejects a device PutDevice must not store.
func checkDevice(d *storage.Device) error {
	var problem string
	switch {
	case d.User == "":
		problem = "no user"
	case d.ID == "":
		problem = "no device id"
	case d.Platform != "ios" && d.Platform != "android":
		problem = fmt.Sprintf("platform %q is neither ios nor android", d.Platform)
	case d.Token == "":
		problem = "no token"
	case len(d.Token) > storage.MaxTokenLen:
		problem = fmt.Sprintf("token of %d bytes, above the limit of %d", len(d.Token), storage.MaxTokenLen)
	case d.Topic == "":
		problem = "no topic"
	case len(d.Muted) > storage.MaxMuted:
		problem = fmt.Sprintf("%d muted conversations, above the limit of %d", len(d.Muted), storage.MaxMuted)
	default:
		return nil
	}
	return fmt.Errorf("embedded: put device %q/%q: %s", d.User, d.ID, problem)
}

// RemoveDevice implements storage.Store.
func (s *Store) RemoveDevice(ctx context.Context, user, device string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	rowKey := deviceKey(user, device)
	var (
		old    storage.Device
		hasOld bool
		tokKey []byte
	)
	plan := func() ([]int, error) {
		v, err := s.get(rowKey)
		hasOld = err == nil
		if errors.Is(err, storage.ErrNotFound) {
			return []int{s.userStripe(user)}, nil
		}
		if err != nil {
			return nil, err
		}
		if old, err = decodeDevice(user, device, v); err != nil {
			return nil, fmt.Errorf("embedded: decode device %q/%q: %w", user, device, err)
		}
		tokKey = tokenKey(old.Platform, old.Topic, old.Token)
		return []int{s.userStripe(user), s.tokenStripe(tokKey)}, nil
	}
	return s.lockDevices(plan, func() error {
		if !hasOld {
			return storage.ErrNotFound
		}
		b := s.db.NewBatch()
		defer b.Close()
		if err := b.Delete(rowKey, nil); err != nil {
			return err
		}
		owner, ok, err := s.tokenOwner(tokKey)
		if err != nil {
			return err
		}
		if ok && owner == (devRef{user, device}) {
			if err := b.Delete(tokKey, nil); err != nil {
				return err
			}
		}
		return s.commit(b)
	})
}

// Devices implements storage.Store. Key order is device id order.
func (s *Store) Devices(ctx context.Context, user string) ([]storage.Device, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()

	prefix := devicesPrefix(user)
	var out []storage.Device
	err := s.scan(prefix, func(k, v []byte) error {
		id, rest, err := decodeStr(k[len(prefix):])
		if err != nil || len(rest) != 0 {
			return errBadKey
		}
		d, err := decodeDevice(user, id, v)
		if err != nil {
			return fmt.Errorf("device %q/%q: %w", user, id, err)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// DropToken implements storage.Store. A token nobody holds is no error.
func (s *Store) DropToken(ctx context.Context, platform, topic, token string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()

	tokKey := tokenKey(platform, topic, token)
	var (
		owner    devRef
		hasOwner bool
	)
	plan := func() ([]int, error) {
		var err error
		owner, hasOwner, err = s.tokenOwner(tokKey)
		if err != nil {
			return nil, err
		}
		stripes := []int{s.tokenStripe(tokKey)}
		if hasOwner {
			stripes = append(stripes, s.userStripe(owner.user))
		}
		return stripes, nil
	}
	return s.lockDevices(plan, func() error {
		if !hasOwner {
			return nil
		}
		// The index should never name a device that registered another
		// token since, but a stale entry must not cost that device its
		// registration.
		holds, err := s.holds(owner, platform, topic, token)
		if err != nil || !holds {
			return err
		}
		b := s.db.NewBatch()
		defer b.Close()
		if err := b.Delete(deviceKey(owner.user, owner.device), nil); err != nil {
			return err
		}
		if err := b.Delete(tokKey, nil); err != nil {
			return err
		}
		return s.commit(b)
	})
}

// devRef names one device.
type devRef struct{ user, device string }

// tokenOwner reads the token index entry at tokKey.
func (s *Store) tokenOwner(tokKey []byte) (devRef, bool, error) {
	v, err := s.get(tokKey)
	if errors.Is(err, storage.ErrNotFound) {
		return devRef{}, false, nil
	}
	if err != nil {
		return devRef{}, false, err
	}
	user, device, err := decodeTokenOwner(v)
	if err != nil {
		return devRef{}, false, fmt.Errorf("embedded: decode token index entry: %w", err)
	}
	return devRef{user, device}, true, nil
}

// holds reports whether the row of ref exists and holds the token.
func (s *Store) holds(ref devRef, platform, topic, token string) (bool, error) {
	v, err := s.get(deviceKey(ref.user, ref.device))
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	d, err := decodeDevice(ref.user, ref.device, v)
	if err != nil {
		return false, fmt.Errorf("embedded: decode device %q/%q: %w", ref.user, ref.device, err)
	}
	return d.Platform == platform && d.Topic == topic && d.Token == token, nil
}

// countDevices counts the rows of user.
func (s *Store) countDevices(user string) (int, error) {
	n := 0
	err := s.scan(devicesPrefix(user), func(_, _ []byte) error {
		n++
		return nil
	})
	return n, err
}

// userStripe and tokenStripe hash into deviceLocks. They hash keys of
// different tables, so a user and a token share a stripe only by chance.
func (s *Store) userStripe(user string) int {
	return int(maphash.Bytes(s.seed, devicesPrefix(user)) % uint64(len(s.deviceLocks)))
}

func (s *Store) tokenStripe(tokKey []byte) int {
	return int(maphash.Bytes(s.seed, tokKey) % uint64(len(s.deviceLocks)))
}

// lockDevices runs fn holding the deviceLocks stripes that plan asks for.
// plan reads what the call depends on (into variables fn uses) and returns
// the stripes that guard it. It runs once without locks to find them and
// again under them; fn runs only if that second run asks for no stripe
// that is not held, otherwise a concurrent write moved a token or device in
// between and lockDevices starts over.
func (s *Store) lockDevices(plan func() ([]int, error), fn func() error) error {
	for {
		want, err := plan()
		if err != nil {
			return err
		}
		slices.Sort(want)
		held := slices.Compact(want)
		for _, i := range held {
			s.deviceLocks[i].Lock()
		}
		need, err := plan()
		covered := err == nil && !slices.ContainsFunc(need, func(i int) bool {
			_, found := slices.BinarySearch(held, i)
			return !found
		})
		if covered {
			err = fn()
		}
		for _, i := range held {
			s.deviceLocks[i].Unlock()
		}
		if err != nil || covered {
			return err
		}
	}
}
