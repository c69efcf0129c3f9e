package hub

import (
	"context"
	"errors"
	"sort"
	"strconv"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// newGroupID returns a k-sortable group id: "g:" + base36 ms time + node-
// random suffix, so ids sort by creation time across nodes.
func (h *Hub) newGroupID() string {
	ms := strconv.FormatInt(h.now().UnixMilli(), 36)
	n := h.groupSeq.Add(1)
	return "g:" + ms + strconv.FormatUint(h.nodeID%1296, 36) + strconv.FormatUint(n%46656, 36) + randomID(3)
}

// announce tells the members (and extra users, e.g. the removed ones) that
// membership changed.
func (h *Hub) announce(conv, action string, users []string, by, title string) {
	frame := protocol.Marshal(protocol.MemberChange{Type: "member", Conv: conv, Action: action, Users: users, By: by, Title: title})
	var extra []string
	if action == "removed" || action == "left" {
		extra = users
	}
	h.publish(&delivery{conv: conv, extra: extra, frame: frame})
}

// canManage reports whether a may rename the conversation and add or remove
// members.
func canManage(a Actor, ms *memberSet) bool {
	if a.system() {
		return true
	}
	r, ok := ms.role(a.User)
	return ok && (r == storage.RoleOwner || r == storage.RoleAdmin)
}

func (h *Hub) validUsers(users []string) ([]string, error) {
	if len(users) > protocol.MaxListLen {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "more than %d users", protocol.MaxListLen)
	}
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !validID(u) {
			return nil, errInvalid("invalid user id %q", u)
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// Create makes a group owned by a (unless a is a service acting as nobody)
// with the given members.
func (h *Hub) Create(ctx context.Context, a Actor, title string, members []string) (protocol.Conversation, error) {
	if len(title) > protocol.MaxTitle {
		return protocol.Conversation{}, protocol.Errorf(protocol.CodeTooLarge, "title exceeds %d bytes", protocol.MaxTitle)
	}
	users, err := h.validUsers(members)
	if err != nil {
		return protocol.Conversation{}, err
	}
	if len(users)+1 > h.cfg.MaxGroupMembers {
		return protocol.Conversation{}, protocol.Errorf(protocol.CodeLimit, "groups hold at most %d members", h.cfg.MaxGroupMembers)
	}
	now := h.now()
	c := storage.Conversation{ID: h.newGroupID(), Kind: storage.KindGroup, Title: title, CreatedBy: a.User, CreatedAt: now}
	ms := make([]storage.Member, 0, len(users)+1)
	if a.User != "" {
		ms = append(ms, storage.Member{Conv: c.ID, User: a.User, Role: storage.RoleOwner, JoinedAt: now})
	} else if len(users) == 0 {
		return protocol.Conversation{}, errInvalid("a group needs members")
	}
	for i, u := range users {
		if u == a.User {
			continue
		}
		role := storage.RoleMember
		if a.User == "" && i == 0 {
			role = storage.RoleOwner // created by a service: first member owns it
		}
		ms = append(ms, storage.Member{Conv: c.ID, User: u, Role: role, JoinedAt: now})
	}
	if err := h.store.CreateConversation(ctx, c, ms); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return protocol.Conversation{}, protocol.Errorf(protocol.CodeConflict, "conversation exists")
		}
		return protocol.Conversation{}, h.storageErr("create", err)
	}
	all := make([]string, len(ms))
	for i, m := range ms {
		all[i] = m.User
	}
	h.announce(c.ID, "created", all, a.User, title)
	h.m.convOps.WithLabelValues("create").Inc()
	return h.describe(c, newMemberSet(ms), a.User, 0, true), nil
}

func (h *Hub) describe(c storage.Conversation, ms *memberSet, user string, last uint64, withMembers bool) protocol.Conversation {
	pc := protocol.Conversation{
		ID:        c.ID,
		Kind:      string(c.Kind),
		Title:     c.Title,
		CreatedBy: c.CreatedBy,
		CreatedAt: c.CreatedAt.UnixMilli(),
		LastSeq:   last,
	}
	if r, ok := ms.role(user); ok {
		pc.Role = string(r)
	}
	if withMembers {
		for _, u := range ms.users {
			pc.Members = append(pc.Members, protocol.Member{User: u, Role: string(ms.roles[u])})
		}
	}
	return pc
}

// Rename changes a group's title.
func (h *Hub) Rename(ctx context.Context, a Actor, conv, title string) error {
	if len(title) > protocol.MaxTitle {
		return protocol.Errorf(protocol.CodeTooLarge, "title exceeds %d bytes", protocol.MaxTitle)
	}
	st, err := h.lockGroup(ctx, a, conv)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	if err := h.store.SetTitle(ctx, conv, title); err != nil {
		return h.storageErr("set_title", err)
	}
	st.conv.Title = title
	h.publishMembersChanged(conv)
	h.announce(conv, "renamed", nil, a.User, title)
	h.m.convOps.WithLabelValues("rename").Inc()
	return nil
}

// lockGroup locks a group conversation that a may manage.
func (h *Hub) lockGroup(ctx context.Context, a Actor, conv string) (*convState, error) {
	if !validConvID(conv) {
		return nil, errInvalid("conv is missing or invalid")
	}
	st, err := h.lock(ctx, conv)
	if err != nil {
		return nil, err
	}
	ms := st.members.Load()
	_, isMember := ms.role(a.User)
	switch {
	case st.conv.Kind != storage.KindGroup:
		err = errForbidden("1:1 conversations have fixed members")
	case !isMember && !a.system():
		err = errNotMember(conv)
	case !canManage(a, ms):
		err = errForbidden("only owners and admins manage %s", conv)
	}
	if err != nil {
		st.mu.Unlock()
		return nil, err
	}
	return st, nil
}

// AddMembers adds users to a group. role is the role of new members
// (member when empty); with an explicit role, existing members change to it,
// which only the owner or the system may do for admins.
func (h *Hub) AddMembers(ctx context.Context, a Actor, conv string, users []string, role string) error {
	users, err := h.validUsers(users)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		return errInvalid("members is empty")
	}
	r := storage.Role(role)
	switch r {
	case "", storage.RoleMember, storage.RoleAdmin:
	default:
		return errInvalid("role must be member or admin")
	}
	st, err := h.lockGroup(ctx, a, conv)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	ms := st.members.Load()
	own, _ := ms.role(a.User)
	ownerOrSystem := a.system() || own == storage.RoleOwner
	changes := make(map[string]storage.Role)
	var added, changed []string
	for _, u := range users {
		old, exists := ms.role(u)
		switch {
		case !exists:
			nr := r
			if nr == "" {
				nr = storage.RoleMember
			}
			if nr == storage.RoleAdmin && !ownerOrSystem {
				return errForbidden("only the owner adds admins")
			}
			changes[u] = nr
			added = append(added, u)
		case r == "" || old == r:
			// Already a member: nothing to do.
		case old == storage.RoleOwner:
			return errForbidden("the owner's role cannot change")
		case !ownerOrSystem:
			return errForbidden("only the owner changes admins")
		default:
			changes[u] = r
			changed = append(changed, u)
		}
	}
	if len(ms.users)+len(added) > h.cfg.MaxGroupMembers {
		return protocol.Errorf(protocol.CodeLimit, "groups hold at most %d members", h.cfg.MaxGroupMembers)
	}
	if len(changes) == 0 {
		return nil
	}
	now := h.now()
	done := make(map[string]storage.Role, len(changes))
	for u, nr := range changes {
		if err := h.store.PutMember(ctx, storage.Member{Conv: conv, User: u, Role: nr, JoinedAt: now}); err != nil {
			// Keep the cache in step with what was stored so far.
			st.members.Store(ms.with(done))
			return h.storageErr("put_member", err)
		}
		done[u] = nr
	}
	st.members.Store(ms.with(changes))
	h.publishMembersChanged(conv)
	if len(added) > 0 {
		h.announce(conv, "added", added, a.User, "")
	}
	if len(changed) > 0 {
		h.announceRole(conv, changed, string(r), a.User)
	}
	h.m.convOps.WithLabelValues("add").Inc()
	return nil
}

// announceRole tells the members that users now have role.
func (h *Hub) announceRole(conv string, users []string, role, by string) {
	frame := protocol.Marshal(protocol.MemberChange{Type: "member", Conv: conv, Action: "role", Users: users, Role: role, By: by})
	h.publish(&delivery{conv: conv, frame: frame})
}

// RemoveMembers removes users from a group. Owners cannot be removed;
// admins can be removed by the owner only.
func (h *Hub) RemoveMembers(ctx context.Context, a Actor, conv string, users []string) error {
	users, err := h.validUsers(users)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		return errInvalid("members is empty")
	}
	st, err := h.lockGroup(ctx, a, conv)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	ms := st.members.Load()
	own, _ := ms.role(a.User)
	var removed []string
	for _, u := range users {
		r, ok := ms.role(u)
		if !ok {
			continue
		}
		if r == storage.RoleOwner {
			return errForbidden("the owner cannot be removed")
		}
		if r == storage.RoleAdmin && own != storage.RoleOwner && !a.system() {
			return errForbidden("only the owner removes admins")
		}
		removed = append(removed, u)
	}
	return h.dropMembersLocked(ctx, st, a, removed, "removed")
}

func (h *Hub) dropMembersLocked(ctx context.Context, st *convState, a Actor, users []string, action string) error {
	if len(users) == 0 {
		return nil
	}
	ms := st.members.Load()
	changes := make(map[string]storage.Role, len(users))
	for _, u := range users {
		if err := h.store.RemoveMember(ctx, st.id, u); err != nil && !errors.Is(err, storage.ErrNotFound) {
			st.members.Store(ms.with(changes))
			return h.storageErr("remove_member", err)
		}
		changes[u] = ""
	}
	st.members.Store(ms.with(changes))
	h.publishMembersChanged(st.id)
	h.announce(st.id, action, users, a.User, "")
	h.m.convOps.WithLabelValues(action).Inc()
	return nil
}

// Leave removes a from a group. An owner who leaves hands ownership to an
// admin, else to the first remaining member.
func (h *Hub) Leave(ctx context.Context, a Actor, conv string) error {
	if !validConvID(conv) {
		return errInvalid("conv is missing or invalid")
	}
	st, err := h.lock(ctx, conv)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	ms := st.members.Load()
	r, ok := ms.role(a.User)
	switch {
	case st.conv.Kind != storage.KindGroup:
		return errForbidden("cannot leave a 1:1 conversation")
	case !ok:
		return errNotMember(conv)
	}
	if r == storage.RoleOwner {
		heir := ""
		for _, u := range ms.users {
			if u == a.User {
				continue
			}
			if heir == "" || (ms.roles[u] == storage.RoleAdmin && ms.roles[heir] != storage.RoleAdmin) {
				heir = u
			}
		}
		if heir != "" {
			if err := h.store.PutMember(ctx, storage.Member{Conv: conv, User: heir, Role: storage.RoleOwner, JoinedAt: h.now()}); err != nil {
				return h.storageErr("put_member", err)
			}
			st.members.Store(ms.with(map[string]storage.Role{heir: storage.RoleOwner}))
			h.announceRole(conv, []string{heir}, string(storage.RoleOwner), a.User)
		}
	}
	return h.dropMembersLocked(ctx, st, a, []string{a.User}, "left")
}

// Conversation describes one conversation, with its members and their
// watermarks, to a member.
func (h *Hub) Conversation(ctx context.Context, a Actor, conv string) (protocol.Conversation, error) {
	st, err := h.member(ctx, a, conv)
	if err != nil {
		return protocol.Conversation{}, err
	}
	st.mu.Lock()
	c := st.conv
	st.mu.Unlock()
	last, err := h.lastSeq(ctx, st)
	if err != nil {
		return protocol.Conversation{}, err
	}
	pc := h.describe(c, st.members.Load(), a.User, last, false)
	ms, err := h.store.Members(ctx, conv)
	if err != nil {
		return pc, h.storageErr("members", err)
	}
	// One read gives every member's role and watermarks, the caller's too.
	pc.Members = make([]protocol.Member, len(ms))
	for i, m := range ms {
		pc.Members[i] = protocol.Member{User: m.User, Role: string(m.Role), DeliveredSeq: m.DeliveredSeq, ReadSeq: m.ReadSeq}
		if m.User == a.User {
			pc.ReadSeq = m.ReadSeq
		}
	}
	if a.User != "" {
		if _, pc.Unread, err = h.tail(ctx, conv, a.User, pc.LastSeq, pc.ReadSeq); err != nil {
			return pc, err
		}
	}
	return pc, nil
}

// maxUnread caps the unread count: clients show "99+" long before.
const maxUnread = 100

// tail reads the end of a conversation once for two answers: its newest
// message (nil if it has none), and how many messages after the user's
// read watermark others sent: a user's own messages are never unread, on
// any of their devices. It reads at most the newest maxUnread messages;
// older unread ones beyond that are counted as others' (exact when at most
// maxUnread messages are unread, an upper bound otherwise), and the count
// is capped at maxUnread.
func (h *Hub) tail(ctx context.Context, conv, user string, last, read uint64) (*storage.Message, uint64, error) {
	if last == 0 {
		return nil, 0, nil
	}
	limit := 1
	if last > read {
		limit = maxUnread
	}
	ms, err := h.store.Messages(ctx, conv, storage.Page{Before: last + 1, Limit: limit})
	if err != nil {
		return nil, 0, h.storageErr("messages", err)
	}
	var newest *storage.Message
	if len(ms) > 0 {
		newest = &ms[len(ms)-1]
	}
	if last <= read {
		return newest, 0, nil
	}
	n := last - read // every unread message, until proven the user's own
	for i := range ms {
		if ms[i].Seq > read && ms[i].Sender == user {
			n--
		}
	}
	return newest, min(n, maxUnread), nil
}

// Conversations lists a user's conversations, most recently active first,
// with unread counts and the last message.
func (h *Hub) Conversations(ctx context.Context, user string) ([]protocol.Conversation, error) {
	ids, err := h.store.UserConversations(ctx, user)
	if err != nil {
		return nil, h.storageErr("user_conversations", err)
	}
	if len(ids) > maxListedConvs {
		ids = ids[:maxListedConvs]
	}
	out := make([]protocol.Conversation, 0, len(ids))
	for _, id := range ids {
		st, err := h.state(ctx, id)
		if err != nil {
			continue
		}
		st.mu.Lock()
		c := st.conv
		st.mu.Unlock()
		last, err := h.lastSeq(ctx, st)
		if err != nil {
			return nil, err
		}
		pc := h.describe(c, st.members.Load(), user, last, false)
		cs, err := h.convState(ctx, id, user, last)
		if err != nil {
			return nil, err
		}
		pc.ReadSeq = cs.ReadSeq
		newest, unread, err := h.tail(ctx, id, user, last, cs.ReadSeq)
		if err != nil {
			return nil, err
		}
		pc.Unread = unread
		if newest != nil {
			pm := toProto(newest)
			pc.Last = &pm
		}
		out = append(out, pc)
	}
	sort.SliceStable(out, func(i, j int) bool { return activity(out[i]) > activity(out[j]) })
	return out, nil
}

func activity(c protocol.Conversation) int64 {
	if c.Last != nil {
		return c.Last.TS
	}
	return c.CreatedAt
}
