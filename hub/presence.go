package hub

import (
	"github.com/parley-im/parley/presence"
	"github.com/parley-im/parley/protocol"
)

// Watch makes s receive presence changes of users and returns their
// current state.
func (h *Hub) Watch(s Session, users []string) ([]protocol.Presence, error) {
	users, err := h.validUsers(users)
	if err != nil {
		return nil, err
	}
	if _, err := h.watchers.Watch(s, users); err != nil {
		return nil, protocol.Errorf(protocol.CodeLimit, "%v", err)
	}
	out := make([]protocol.Presence, 0, len(users))
	for _, u := range users {
		out = append(out, PresenceFrame(h.tracker.Status(u)))
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
		out = append(out, PresenceFrame(h.tracker.Status(u)))
	}
	return out, nil
}

// PresenceFrame converts a presence status to its frame.
func PresenceFrame(st presence.Status) protocol.Presence {
	p := protocol.Presence{Type: protocol.TypePresence, User: st.User, Online: st.Online, Devices: st.Devices}
	if !st.LastSeen.IsZero() {
		p.LastSeen = st.LastSeen.UnixMilli()
	}
	return p
}
