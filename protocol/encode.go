package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Message is a conversation message as clients see it.
type Message struct {
	Conv   string          `json:"conv"`
	Seq    uint64          `json:"seq"`
	From   string          `json:"from,omitempty"`
	Device string          `json:"device,omitempty"`
	CMID   string          `json:"cmid,omitempty"`
	Kind   string          `json:"kind,omitempty"` // "system" for system messages; empty for user messages
	Body   string          `json:"body,omitempty"`
	Meta   json.RawMessage `json:"meta,omitempty"`
	TS     int64           `json:"ts"` // server time, unix ms
}

// AppendMessage appends the message frame of m to dst. It allocates nothing
// beyond growing dst: the hub encodes a message once and writes the same bytes
// to every recipient.
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, `{"type":"message",`...)
	dst = appendMessageFields(dst, m)
	return append(dst, '}')
}

func appendMessageFields(dst []byte, m *Message) []byte {
	dst = append(dst, `"conv":`...)
	dst = AppendString(dst, m.Conv)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	if m.From != "" {
		dst = append(dst, `,"from":`...)
		dst = AppendString(dst, m.From)
	}
	if m.Device != "" {
		dst = append(dst, `,"device":`...)
		dst = AppendString(dst, m.Device)
	}
	if m.CMID != "" {
		dst = append(dst, `,"cmid":`...)
		dst = AppendString(dst, m.CMID)
	}
	if m.Kind != "" {
		dst = append(dst, `,"kind":`...)
		dst = AppendString(dst, m.Kind)
	}
	if m.Body != "" {
		dst = append(dst, `,"body":`...)
		dst = AppendString(dst, m.Body)
	}
	if len(m.Meta) > 0 {
		dst = append(dst, `,"meta":`...)
		dst = append(dst, m.Meta...)
	}
	dst = append(dst, `,"ts":`...)
	return strconv.AppendInt(dst, m.TS, 10)
}

// AppendMessageObject appends m as a bare JSON object (inside lists).
func AppendMessageObject(dst []byte, m *Message) []byte {
	dst = append(dst, '{')
	dst = appendMessageFields(dst, m)
	return append(dst, '}')
}

// Ack is the answer to a send: the message is durable.
type Ack struct {
	ID        string `json:"id,omitempty"`
	Conv      string `json:"conv"`
	Seq       uint64 `json:"seq"`
	CMID      string `json:"cmid,omitempty"`
	TS        int64  `json:"ts"`
	Duplicate bool   `json:"duplicate,omitempty"` // a retry of an earlier send
}

// AppendAck appends an ack frame.
func AppendAck(dst []byte, a *Ack) []byte {
	dst = append(dst, `{"type":"ack"`...)
	if a.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, a.ID)
	}
	dst = append(dst, `,"conv":`...)
	dst = AppendString(dst, a.Conv)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, a.Seq, 10)
	if a.CMID != "" {
		dst = append(dst, `,"cmid":`...)
		dst = AppendString(dst, a.CMID)
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, a.TS, 10)
	if a.Duplicate {
		dst = append(dst, `,"duplicate":true`...)
	}
	return append(dst, '}')
}

// AppendEvent appends a live-topic event frame. data must be valid JSON.
func AppendEvent(dst []byte, topic string, data []byte, from string, ts int64) []byte {
	dst = append(dst, `{"type":"event","topic":`...)
	dst = AppendString(dst, topic)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	if from != "" {
		dst = append(dst, `,"from":`...)
		dst = AppendString(dst, from)
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// AppendError appends an error frame.
func AppendError(dst []byte, id string, e *Error) []byte {
	dst = append(dst, `{"type":"error"`...)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, id)
	}
	dst = append(dst, `,"code":`...)
	dst = AppendString(dst, e.Code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	if e.RetryAfter > 0 {
		dst = append(dst, `,"retry_after_ms":`...)
		dst = strconv.AppendInt(dst, e.RetryAfter, 10)
	}
	return append(dst, '}')
}

// Hello is the first frame of every session.
type Hello struct {
	Type        string   `json:"type"` // "hello"
	Session     string   `json:"session"`
	User        string   `json:"user"`
	Device      string   `json:"device"`
	Node        string   `json:"node"`
	HeartbeatMS int64    `json:"heartbeat_ms"`
	IdleMS      int64    `json:"idle_timeout_ms"`
	ServerTime  int64    `json:"server_time"` // unix ms
	TokenExp    int64    `json:"token_exp"`   // unix s
	MaxMessage  int      `json:"max_message"`
	Resume      *Resume  `json:"resume,omitempty"`
	Protocols   []string `json:"-"`
}

// Resume tells a connecting device where its conversations stand, so it can
// send one sync for exactly the conversations that moved.
type Resume struct {
	Convs []ConvState `json:"convs"`
	More  bool        `json:"more,omitempty"` // more conversations than listed; use convs
}

// ConvState is a conversation's position for one user.
type ConvState struct {
	Conv         string `json:"conv"`
	LastSeq      uint64 `json:"last_seq"`
	ReadSeq      uint64 `json:"read_seq"`
	DeliveredSeq uint64 `json:"delivered_seq"`
}

// Synced answers a sync: per conversation, the messages after the device's
// position (at most the limit) and whether more remain.
type Synced struct {
	Type  string       `json:"type"` // "synced"
	ID    string       `json:"id,omitempty"`
	Convs []SyncedConv `json:"convs"`
	More  bool         `json:"more,omitempty"` // more conversations to sync: repeat the sync
}

// SyncedConv is one conversation's part of a synced frame.
type SyncedConv struct {
	ConvState
	Messages []Message `json:"messages"`
	More     bool      `json:"more,omitempty"` // more messages after the last one
}

// Receipt is a watermark change, sent to the conversation's members.
type Receipt struct {
	Type   string `json:"type"` // "receipt"
	Conv   string `json:"conv"`
	User   string `json:"user"`
	Device string `json:"device,omitempty"`
	Kind   string `json:"kind"` // delivered | read
	Seq    uint64 `json:"seq"`
}

// Typing is an ephemeral typing indicator.
type Typing struct {
	Type   string `json:"type"` // "typing"
	Conv   string `json:"conv"`
	User   string `json:"user"`
	Device string `json:"device,omitempty"`
	State  string `json:"state"` // start | stop
}

// Presence is a watched user's state.
type Presence struct {
	Type     string   `json:"type"` // "presence"
	User     string   `json:"user"`
	Online   bool     `json:"online"`
	Devices  []string `json:"devices,omitempty"`
	LastSeen int64    `json:"last_seen,omitempty"` // unix ms
	// Epoch orders a user's presence frames on this connection: a frame
	// whose epoch is not above the last one applied for the user is stale
	// (a change that overtook the watch reply). Absent when zero (a user
	// never seen).
	Epoch uint64 `json:"epoch,omitempty"`
}

// MemberChange tells members (and the removed user) that membership changed.
type MemberChange struct {
	Type   string   `json:"type"` // "member"
	Conv   string   `json:"conv"`
	Action string   `json:"action"` // created | added | removed | left | renamed | role
	Users  []string `json:"users,omitempty"`
	Role   string   `json:"role,omitempty"` // with action role: the users' new role
	By     string   `json:"by,omitempty"`
	Title  string   `json:"title,omitempty"`
}

// Bye tells the client the node is going away.
type Bye struct {
	Type             string `json:"type"` // "bye"
	Reason           string `json:"reason"`
	ReconnectAfterMS int64  `json:"reconnect_after_ms"`
}

// Result answers a request frame that carried an id.
type Result struct {
	Type     string          `json:"type"` // "result"
	ID       string          `json:"id,omitempty"`
	Conv     *Conversation   `json:"conv,omitempty"`
	Convs    []Conversation  `json:"convs,omitempty"`
	Messages []Message       `json:"messages,omitempty"`
	More     *bool           `json:"more,omitempty"`
	Presence []Presence      `json:"presence,omitempty"`
	TokenExp int64           `json:"token_exp,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Devices  []Device        `json:"devices,omitempty"`
}

// Device is one registered device, as GET /v1/devices lists it. The token
// is shown redacted.
type Device struct {
	Device string `json:"device"`
	DevicePush
	UpdatedAt int64 `json:"updated_at"` // unix ms
}

// HistoryResult answers history: messages is always present.
type HistoryResult struct {
	Type     string    `json:"type"` // "result"
	ID       string    `json:"id,omitempty"`
	Messages []Message `json:"messages"`
	More     bool      `json:"more"`
}

// ConvsResult answers convs: convs is always present.
type ConvsResult struct {
	Type  string         `json:"type"` // "result"
	ID    string         `json:"id,omitempty"`
	Convs []Conversation `json:"convs"`
}

// Conversation is a conversation as listed to a member.
type Conversation struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Title     string   `json:"title,omitempty"`
	CreatedBy string   `json:"created_by,omitempty"`
	CreatedAt int64    `json:"created_at"`
	Role      string   `json:"role,omitempty"`
	Members   []Member `json:"members,omitempty"`
	LastSeq   uint64   `json:"last_seq"`
	ReadSeq   uint64   `json:"read_seq"`
	Unread    uint64   `json:"unread"`
	Last      *Message `json:"last,omitempty"`
}

// Member is a conversation member as listed.
type Member struct {
	User         string `json:"user"`
	Role         string `json:"role"`
	DeliveredSeq uint64 `json:"delivered_seq"`
	ReadSeq      uint64 `json:"read_seq"`
}

// Marshal encodes a server frame struct (the cold frames). It never fails for
// the types of this package.
func Marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only reachable with a non-protocol type or invalid RawMessage.
		return AppendError(nil, "", Errorf(CodeInternal, "encode: %v", err))
	}
	return b
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// control characters, '<', '>', '&', U+2028 and U+2029 are escaped so the
// output is safe inside HTML and JavaScript.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
