package hub

import (
	"context"

	"github.com/parley-im/parley/presence"
	"github.com/parley-im/parley/protocol"
)

// Watch makes s receive presence changes of users and returns their
// current state. A user may watch only users who share a conversation with
// them: presence is not public.
func (h *Hub) Watch(ctx context.Context, s Session, users []string) ([]protocol.Presence, error) {
	users, err := h.validUsers(users)
	if err != nil {
		return nil, err
	}
	if err := h.contacts(ctx, s.User(), users); err != nil {
		return nil, err
	}
	if _, err := h.watchers.Watch(s, users); err != nil {
		return nil, protocol.Errorf(protocol.CodeLimit, "%v", err)
	}
	// The cluster-wide published state, not a live one: the changes the
	// watcher gets from now on are relative to it (a flap coalesced away
	// publishes none, so starting from a live state caught mid-flap would
	// leave the watcher wrong for good). The epochs let the client drop a
	// change that overtook this reply.
	out := make([]protocol.Presence, 0, len(users))
	for _, u := range users {
		out = append(out, presenceFrame(h.view.Status(u)))
	}
	return out, nil
}

// Unwatch stops presence changes of users for s.
func (h *Hub) Unwatch(s Session, users []string) {
	h.watchers.Unwatch(s, users)
}

// Presence returns users' current state (HTTP API).
func (h *Hub) Presence(users []string) ([]protocol.Presence, error) {
	users, err := h.validUsers(users)
	if err != nil {
		return nil, err
	}
	out := make([]protocol.Presence, 0, len(users))
	for _, u := range users {
		out = append(out, presenceFrame(h.view.Status(u)))
	}
	return out, nil
}

// presenceFrame converts a presence status to its frame.
func presenceFrame(st presence.Status) protocol.Presence {
	p := protocol.Presence{Type: protocol.TypePresence, User: st.User, Online: st.Online, Devices: st.Devices, Epoch: st.Epoch}
	if !st.LastSeen.IsZero() {
		p.LastSeen = st.LastSeen.UnixMilli()
	}
	return p
}

// contacts checks that every one of users shares a conversation with user.
func (h *Hub) contacts(ctx context.Context, user string, users []string) error {
	ids, err := h.store.UserConversations(ctx, user)
	if err != nil {
		return h.storageErr("user_conversations", err)
	}
	sets := make([]*memberSet, 0, len(ids))
	for _, id := range ids {
		if st, err := h.state(ctx, id); err == nil {
			sets = append(sets, st.members.Load())
		}
	}
outer:
	for _, u := range users {
		if u == user {
			continue
		}
		for _, ms := range sets {
			if _, ok := ms.role(u); ok {
				continue outer
			}
		}
		return protocol.Errorf(protocol.CodeForbidden, "%s shares no conversation with you", u)
	}
	return nil
}

// encodedPresence is one presence change encoded for all its watchers.
type encodedPresence struct {
	user  string
	epoch uint64
	key   string // the key a session keeps the change pending under
	frame []byte
}

// EncodedPresence returns st as a presence frame, and the key under which
// a session keeps it pending (the newest change per user wins). The watchers
// of one change are notified one after another on the bus goroutine, so a
// one-entry memo encodes each change once, however many watch it.
func (h *Hub) EncodedPresence(st presence.Status) (key string, frame []byte) {
	if e := h.lastPresence.Load(); e != nil && e.user == st.User && e.epoch == st.Epoch {
		return e.key, e.frame
	}
	e := &encodedPresence{user: st.User, epoch: st.Epoch, key: "p:" + st.User, frame: protocol.Marshal(presenceFrame(st))}
	h.lastPresence.Store(e)
	return e.key, e.frame
}
