package hub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

// Push: device registrations, and the planner that turns a queued push job
// into the notifications to send (push.Planner). The hub queues one job per
// member and message after the message is acked (Config.PushJobs); the job
// is planned when a worker on any node takes it, from the state then:
//
//   - a member no longer in the conversation, or who read it already,
//     gets nothing;
//   - a device with no live session anywhere in the cluster gets a push now;
//   - a device that is online gets none while the delivery window runs
//     (from the ack); if that device has not confirmed delivery when it
//     ends (a half-dead mobile socket), it gets one then. Devices confirm
//     with delivered (or read) receipts, which every node records per
//     device from the bus (confirmMap);
//   - muted conversations are skipped per device; a device that hides text
//     gets no message text;
//   - all pushes of a conversation share its collapse id, the text counts
//     the unread messages ("3 new messages"), and the badge is the user's
//     unread total.

// Device limits the hub checks.
const (
	maxPushTopic  = 256
	maxPushLocale = 35
)

// PutDevice registers or updates the push registration of the acting
// device.
func (h *Hub) PutDevice(ctx context.Context, a Actor, p protocol.DevicePush) error {
	if !validID(a.User) || a.Device == "" || len(a.Device) > protocol.MaxIDLen {
		return errInvalid("a device registration needs a user and a device id")
	}
	switch {
	case p.Platform != string(push.IOS) && p.Platform != string(push.Android):
		return errInvalid("platform must be ios or android")
	case p.Token == "" || len(p.Token) > storage.MaxTokenLen:
		return errInvalid("token is missing or longer than %d bytes", storage.MaxTokenLen)
	case p.Topic == "" || len(p.Topic) > maxPushTopic:
		return errInvalid("topic (the app id) is missing or longer than %d bytes", maxPushTopic)
	case len(p.Locale) > maxPushLocale:
		return errInvalid("locale is longer than %d bytes", maxPushLocale)
	case len(p.Muted) > storage.MaxMuted:
		return protocol.Errorf(protocol.CodeLimit, "at most %d muted conversations", storage.MaxMuted)
	}
	for _, c := range p.Muted {
		if !validConvID(c) {
			return errInvalid("muted: %q is not a conversation id", truncateID(c))
		}
	}
	err := h.store.PutDevice(ctx, storage.Device{
		User: a.User, ID: a.Device, Platform: p.Platform, Token: p.Token, Topic: p.Topic, Sandbox: p.Sandbox,
		Locale: p.Locale, Muted: slices.Compact(slices.Sorted(slices.Values(p.Muted))), HideText: p.HideText, UpdatedAt: h.now(),
	})
	switch {
	case errors.Is(err, storage.ErrExists):
		return protocol.Errorf(protocol.CodeLimit, "at most %d devices per user", storage.MaxDevicesPerUser)
	case err != nil:
		return h.storageErr("put_device", err)
	}
	return nil
}

// RemoveDevice removes the push registration of the acting device (or of
// device, for the HTTP API).
func (h *Hub) RemoveDevice(ctx context.Context, user, device string) error {
	err := h.store.RemoveDevice(ctx, user, device)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return protocol.Errorf(protocol.CodeNotFound, "no push registration for device %q", truncateID(device))
	case err != nil:
		return h.storageErr("remove_device", err)
	}
	return nil
}

// Devices lists a user's push registrations, tokens redacted.
func (h *Hub) Devices(ctx context.Context, user string) ([]protocol.Device, error) {
	ds, err := h.store.Devices(ctx, user)
	if err != nil {
		return nil, h.storageErr("devices", err)
	}
	out := make([]protocol.Device, 0, len(ds))
	for _, d := range ds {
		out = append(out, protocol.Device{Device: d.ID, UpdatedAt: d.UpdatedAt.UnixMilli(), DevicePush: protocol.DevicePush{
			Platform: d.Platform, Token: push.Redact(d.Token), Topic: d.Topic, Sandbox: d.Sandbox,
			Locale: d.Locale, Muted: d.Muted, HideText: d.HideText}})
	}
	return out, nil
}

func truncateID(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// queuePushes hands the message's push jobs (one per member but the
// sender) to the queue. It never blocks, and costs the send one channel
// send whatever the group's size: the queue makes the jobs on its own
// goroutine from the (immutable) member list.
func (h *Hub) queuePushes(st *convState, sender string, seq uint64, at time.Time) {
	if h.cfg.PushJobs == nil {
		return
	}
	h.cfg.PushJobs(st.members.Load().users, sender, st.id, seq, at.UnixMilli())
}

// maxBadgeConvs bounds the conversations summed for a badge.
const maxBadgeConvs = maxResumeConvs

// Plan implements push.Planner.
func (h *Hub) Plan(ctx context.Context, j push.Job) ([]push.Target, time.Duration, error) {
	m, err := h.store.Member(ctx, j.Conv, j.User)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, nil // left the conversation
	}
	if err != nil {
		return nil, 0, fmt.Errorf("member: %w", err)
	}
	if m.ReadSeq >= j.Seq {
		return nil, 0, nil // read on some device already
	}

	devices, err := h.store.Devices(ctx, j.User)
	if err != nil {
		return nil, 0, fmt.Errorf("devices: %w", err)
	}
	if len(devices) == 0 {
		return nil, 0, nil
	}
	online := h.view.Status(j.User).Devices
	age := h.now().Sub(time.UnixMilli(j.At))
	var wait time.Duration
	var due []storage.Device
	for _, d := range devices {
		switch {
		case slices.Contains(d.Muted, j.Conv):
		case slices.Contains(online, d.ID) && h.confirms.get(j.User, d.ID, j.Conv) >= j.Seq:
			// Online and this device confirmed it: nothing to do.
		case slices.Contains(online, d.ID) && age < h.cfg.PushWindow:
			wait = max(wait, h.cfg.PushWindow-age)
		default:
			due = append(due, d)
		}
	}
	if len(due) == 0 {
		return nil, wait, nil
	}
	ms, err := h.store.Messages(ctx, j.Conv, storage.Page{Before: j.Seq + 1, Limit: 1})
	if err != nil {
		return nil, 0, fmt.Errorf("message: %w", err)
	}
	if len(ms) != 1 || ms[0].Seq != j.Seq {
		return nil, 0, nil // not readable: nothing to announce
	}
	msg := ms[0]
	st, err := h.state(ctx, j.Conv)
	if err != nil {
		return nil, 0, fmt.Errorf("conversation: %w", err)
	}
	last, err := h.lastSeq(ctx, st)
	if err != nil {
		return nil, 0, err
	}
	unread := int(last - m.ReadSeq)
	badge := h.unreadTotal(ctx, j.User)
	st.mu.Lock()
	title, group := st.conv.Title, st.conv.Kind == storage.KindGroup
	st.mu.Unlock()
	if title == "" {
		title = msg.Sender
	}
	targets := make([]push.Target, 0, len(due))
	for _, d := range due {
		n := push.Notification{
			ID: j.ID() + ":" + d.ID, Token: d.Token, Platform: push.Platform(d.Platform), Topic: d.Topic, Sandbox: d.Sandbox,
			CollapseID: j.Conv, Title: clip(title, push.MaxTitle), Badge: &badge, Priority: push.High, MutableContent: true,
			Data:       map[string]string{"conv": j.Conv, "seq": strconv.FormatUint(j.Seq, 10), "from": msg.Sender},
			Expiration: time.UnixMilli(j.At).Add(24 * time.Hour),
		}
		switch {
		case d.HideText:
		case unread > 1:
			n.Body = strconv.Itoa(unread) + " new messages"
		case group:
			n.Body = clip(msg.Sender+": "+msg.Body, push.MaxBody)
		default:
			n.Body = clip(msg.Body, push.MaxBody)
		}
		targets = append(targets, push.Target{Device: d.ID, N: n})
	}
	return targets, wait, nil
}

// unreadTotal sums the user's unread messages over (at most maxBadgeConvs
// of) their conversations.
func (h *Hub) unreadTotal(ctx context.Context, user string) int {
	ids, err := h.store.UserConversations(ctx, user)
	if err != nil {
		return 0
	}
	total := 0
	for _, id := range ids[:min(len(ids), maxBadgeConvs)] {
		st, err := h.state(ctx, id)
		if err != nil {
			continue
		}
		last, err := h.lastSeq(ctx, st)
		if err != nil {
			continue
		}
		m, err := h.store.Member(ctx, id, user)
		if err == nil && last > m.ReadSeq {
			total += int(last - m.ReadSeq)
		}
	}
	return total
}

// HasDevices implements push.Planner: one short prefix scan of the store.
func (h *Hub) HasDevices(ctx context.Context, user string) bool {
	ds, err := h.store.Devices(ctx, user)
	return err != nil || len(ds) > 0 // on error, queue: the planner decides later
}

// DropToken implements push.Planner.
func (h *Hub) DropToken(ctx context.Context, platform, topic, token string) error {
	return h.store.DropToken(ctx, platform, topic, token)
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// publishConfirm tells every node that a device has a conversation up to
// seq (its delivered or read receipt). Nodes without push publish none (the
// nodes of a cluster share their push configuration).
func (h *Hub) publishConfirm(user, device, conv string, seq uint64) {
	if device == "" || h.cfg.PushJobs == nil {
		return // only the push planner reads confirmations
	}
	b := make([]byte, 0, 24+len(user)+len(device)+len(conv))
	b = append(b, kindConfirm)
	b = binary.BigEndian.AppendUint64(b, h.nodeID)
	b = appendStr(appendStr(appendStr(b, user), device), conv)
	b = binary.AppendUvarint(b, seq)
	if err := h.nc.Publish(subjBroadcast, b); err != nil {
		h.m.busErrors.Inc()
	}
}

// confirmMap remembers, per (user, device, conversation), the highest seq
// the device confirmed lately. Entries older than confirmKeep are pruned
// (the planner only needs confirmations within a delivery window); at most
// confirmMax are kept.
type confirmMap struct {
	mu sync.Mutex
	m  map[string]confirmEntry // guarded by mu
}

type confirmEntry struct {
	seq uint64
	at  time.Time
}

const (
	confirmKeep = 5 * time.Minute
	confirmMax  = 1 << 20
)

func confirmKey(user, device, conv string) string { return user + "\x00" + device + "\x00" + conv }

func (c *confirmMap) add(user, device, conv string, seq uint64, now time.Time) {
	k := confirmKey(user, device, conv)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]confirmEntry)
	}
	if e, ok := c.m[k]; ok && e.seq >= seq {
		c.m[k] = confirmEntry{e.seq, now}
		return
	}
	if len(c.m) >= confirmMax {
		return // full: such a device gets a push it might not have needed
	}
	c.m[k] = confirmEntry{seq, now}
}

func (c *confirmMap) get(user, device, conv string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[confirmKey(user, device, conv)].seq
}

func (c *confirmMap) prune(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.at.Before(cutoff) {
			delete(c.m, k)
		}
	}
}
