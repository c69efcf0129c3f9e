package fcm

import (
	"strconv"
	"time"

	"github.com/parley-im/parley/push"
)

// The FCM HTTP v1 request body, only the fields Parley sets. See
// https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages.

type sendRequest struct {
	Message message `json:"message"`
}

type message struct {
	Token        string            `json:"token"`
	Notification *notification     `json:"notification,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
	Android      *androidConfig    `json:"android,omitempty"`
}

type notification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type androidConfig struct {
	CollapseKey  string               `json:"collapse_key,omitempty"`
	Priority     string               `json:"priority"`
	TTL          string               `json:"ttl,omitempty"`
	Notification *androidNotification `json:"notification,omitempty"`
}

type androidNotification struct {
	Tag               string `json:"tag,omitempty"`
	NotificationCount *int   `json:"notification_count,omitempty"`
}

// DataPushID is the data key that carries Notification.ID to the app (for
// deduplication), unless n.Data already sets it.
const DataPushID = "push_id"

// newMessage builds the v1 message for n at time now.
//
// A notification with neither Title nor Body is sent as a data message (the
// app decides what to show). An empty Body is left out, so the device shows
// the title alone: the user hides message text.
func newMessage(n *push.Notification, now time.Time) message {
	m := message{Token: n.Token}
	if n.Title != "" || n.Body != "" {
		m.Notification = &notification{Title: n.Title, Body: n.Body}
	}
	if len(n.Data) > 0 || n.ID != "" {
		m.Data = make(map[string]string, len(n.Data)+1)
		for k, v := range n.Data {
			m.Data[k] = v
		}
		if _, ok := m.Data[DataPushID]; !ok && n.ID != "" {
			m.Data[DataPushID] = n.ID
		}
	}
	a := &androidConfig{Priority: "NORMAL", CollapseKey: n.CollapseID}
	if n.Priority == push.High {
		a.Priority = "HIGH"
	}
	if !n.Expiration.IsZero() {
		a.TTL = ttl(n.Expiration.Sub(now))
	}
	if n.CollapseID != "" || n.Badge != nil {
		a.Notification = &androidNotification{Tag: n.CollapseID, NotificationCount: n.Badge}
	}
	m.Android = a
	return m
}

// ttl formats d as a protobuf Duration in whole seconds ("3600s"), within
// FCM's 0 to 28 days. An expiration already past gives "0s": deliver now or
// drop.
func ttl(d time.Duration) string {
	d = min(max(d, 0), maxTTL)
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}
