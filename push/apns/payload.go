package apns

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/sideshow/apns2"

	"github.com/parley-im/parley/push"
)

// maxCollapseID is Apple's limit for apns-collapse-id, in bytes.
const maxCollapseID = 64

// aps is the payload's "aps" dictionary.
type aps struct {
	Alert            *alert `json:"alert,omitempty"`
	Badge            *int   `json:"badge,omitempty"`
	Sound            string `json:"sound,omitempty"`
	ContentAvailable int    `json:"content-available,omitempty"`
	MutableContent   int    `json:"mutable-content,omitempty"`
	ThreadID         string `json:"thread-id,omitempty"`
}

type alert struct {
	Title  string `json:"title,omitempty"`
	Body   string `json:"body,omitempty"`
	LocKey string `json:"loc-key,omitempty"`
}

// buildRequest turns n into apns2's request: headers and the JSON payload
// (see the package doc for the choices). It fails only when the payload
// cannot fit MaxPayload even with the body shortened.
func buildRequest(n *push.Notification, hiddenLoc string) (*apns2.Notification, error) {
	req := &apns2.Notification{
		DeviceToken: n.Token,
		Topic:       n.Topic,
		CollapseID:  collapseID(n.CollapseID),
		Expiration:  n.Expiration,
		PushType:    apns2.PushTypeAlert,
		Priority:    apns2.PriorityHigh,
	}
	if n.ID != "" {
		req.ApnsID = apnsID(n.ID)
	}
	if n.Priority != push.High {
		req.Priority = apns2.PriorityLow
	}

	a := aps{Badge: n.Badge, ThreadID: req.CollapseID}
	if n.MutableContent {
		a.MutableContent = 1
	}
	al := alert{Title: n.Title, Body: n.Body}
	if al.Body == "" {
		al.LocKey = hiddenLoc
	}
	if al != (alert{}) {
		a.Alert = &al
		a.Sound = "default"
	} else if a.Badge == nil {
		// Nothing to show: a background push wakes the app to sync. Apple
		// refuses priority 10 for it.
		req.PushType = apns2.PushTypeBackground
		req.Priority = apns2.PriorityLow
		a.ContentAvailable = 1
	}

	payload := make(map[string]any, len(n.Data)+1)
	for k, v := range n.Data {
		if k != "aps" { // reserved by Apple; never let data overwrite it
			payload[k] = v
		}
	}
	payload["aps"] = &a

	body := al.Body
	for range 4 {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		if len(b) <= MaxPayload {
			req.Payload = b
			return req, nil
		}
		if a.Alert == nil || body == "" {
			break
		}
		// Shorten the body by the excess (escaping may need another round).
		body = truncateUTF8(body, len(body)-(len(b)-MaxPayload)-len("…"))
		a.Alert.Body = body + "…"
		if body == "" {
			a.Alert.Body = ""
		}
	}
	return nil, fmt.Errorf("payload over %d bytes", MaxPayload)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// collapseID fits id into Apple's 64 bytes: as is when it fits, else its
// hex SHA-256 (64 bytes), so every push of a conversation still collapses.
func collapseID(id string) string {
	if len(id) <= maxCollapseID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// apnsIDNamespace is the RFC 9562 namespace of apns-id UUIDs.
var apnsIDNamespace = [16]byte{
	0x6f, 0x2b, 0x9c, 0x51, 0x0e, 0x4d, 0x4a, 0x8b,
	0x9d, 0x33, 0x8c, 0x1f, 0x52, 0x7a, 0x60, 0xe4,
}

// apnsID derives the apns-id from a notification id: a name-based UUID
// (version 5, SHA-1, RFC 9562), lowercase canonical form. The same id
// always gives the same UUID, so Apple and logs see a retry as the same push.
func apnsID(id string) string {
	h := sha1.New()
	h.Write(apnsIDNamespace[:])
	h.Write([]byte(id))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
