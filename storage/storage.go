// Package storage owns Parley's durable data: conversations, members, messages,
// idempotency keys and read/delivery watermarks. It defines one interface, Store,
// shaped for the ScyllaDB data model of DESIGN.md, and the embedded backend
// (pebble) that `parley serve` uses by default.
//
// Data model (the same keys in every backend):
//
//	conversations   (conv)                      -> Conversation
//	members         (conv, user)                -> Member
//	user_convs      (user, conv)                -> joined marker (a user's conversation list)
//	messages        ((conv, bucket), seq DESC)  -> Message, bucket = seq / BucketSize
//	client_ids      ((conv, sender), cmid)      -> seq (idempotent sends)
//	devices         (user, device)              -> Device (push registration)
//	push_tokens     (platform, topic, token)    -> (user, device) (a token's one holder)
//
// Messages are bucketed by sequence range rather than by wall-clock time: a
// bucket holds at most BucketSize messages, so no partition grows without bound
// however bursty a conversation is, and the bucket of any seq is known without
// a lookup, which makes history pages and resume single-partition reads.
//
// The package must not know about sockets, NATS or the protocol. Nothing here
// needs a multi-partition transaction: callers (the hub) own sequence
// assignment per conversation, every write is idempotent so it can be
// retried, and a message write claims its seq (ErrConflict when another
// node claimed it first), so nodes that share a store never overwrite each
// other's messages.
package storage

import (
	"context"
	"errors"
	"time"
)

// BucketSize is the number of sequence numbers per message partition.
const BucketSize = 1024

// Bucket returns the partition bucket of a message sequence number.
func Bucket(seq uint64) uint64 { return seq / BucketSize }

// Errors returned by every backend. Callers compare with errors.Is.
var (
	ErrNotFound = errors.New("storage: not found")
	ErrExists   = errors.New("storage: already exists")
	ErrClosed   = errors.New("storage: closed")
	// ErrConflict means a message's (conv, seq) is taken by another
	// message: another node assigned the same seq first. Nothing of the
	// call was stored; the caller re-reads LastSeq and retries.
	ErrConflict = errors.New("storage: seq taken by another message")
)

// Kind is the kind of a conversation.
type Kind string

const (
	KindDirect Kind = "direct" // exactly two members, id derived from the pair
	KindGroup  Kind = "group"
)

// Role is a member's role in a conversation.
type Role string

const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// Conversation is a conversation's metadata.
type Conversation struct {
	ID        string    `json:"id"`
	Kind      Kind      `json:"kind"`
	Title     string    `json:"title,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Member is one user's membership of one conversation, with the user's
// watermarks: the highest seq any of the user's devices confirmed delivered,
// and the highest seq the user read. Watermarks only move forward.
type Member struct {
	Conv         string    `json:"conv"`
	User         string    `json:"user"`
	Role         Role      `json:"role"`
	JoinedAt     time.Time `json:"joined_at"`
	DeliveredSeq uint64    `json:"delivered_seq"`
	ReadSeq      uint64    `json:"read_seq"`
}

// MessageKind tells user messages from system messages.
type MessageKind string

const (
	MessageUser   MessageKind = "user"
	MessageSystem MessageKind = "system"
)

// Message is one persisted conversation message. Seq is assigned by the
// caller, starts at 1 and has no gaps within a conversation.
type Message struct {
	Conv   string      `json:"conv"`
	Seq    uint64      `json:"seq"`
	Sender string      `json:"from,omitempty"`   // user id; empty for system messages
	Device string      `json:"device,omitempty"` // sending device, if any
	CMID   string      `json:"cmid,omitempty"`   // client message id, unique per (conv, sender)
	Kind   MessageKind `json:"kind"`
	Body   string      `json:"body,omitempty"`
	Meta   []byte      `json:"meta,omitempty"` // raw JSON object or nil
	Time   int64       `json:"ts"`             // server time, unix milliseconds
}

// Page selects messages of one conversation. Before and After are exclusive
// bounds (0 = unbounded). With After set the page holds the oldest messages
// after it; otherwise the newest messages before Before. Either way the result
// is in ascending seq order. Limit is capped at MaxPage; 0 means DefaultPage.
type Page struct {
	Before uint64
	After  uint64
	Limit  int
}

const (
	DefaultPage = 50
	MaxPage     = 1000
)

// Device is one device's push registration. A (Platform, Topic, Token)
// triple belongs to at most one (User, ID): registering it for another
// device takes it away from the old one (a token moves with a re-login to
// another user, and the old user must get no more notifications on it).
type Device struct {
	User     string `json:"user"`
	ID       string `json:"device"`   // the device id of the user's sessions (JWT did)
	Platform string `json:"platform"` // "ios" (APNs) or "android" (FCM)
	Token    string `json:"token"`    // provider token
	Topic    string `json:"topic"`    // app bundle id / app
	Sandbox  bool   `json:"sandbox,omitempty"`
	Locale   string `json:"locale,omitempty"`
	// Muted lists conversations this device wants no pushes for.
	Muted []string `json:"muted,omitempty"`
	// HideText sends pushes without message text.
	HideText  bool      `json:"hide_text,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Device limits.
const (
	MaxDevicesPerUser = 32
	MaxMuted          = 1000
	MaxTokenLen       = 4096
)

// ReceiptKind names a watermark.
type ReceiptKind string

const (
	ReceiptDelivered ReceiptKind = "delivered"
	ReceiptRead      ReceiptKind = "read"
)

// Store is the durable store. Every method is safe for concurrent use.
// A write that returns nil is durable: it survives a crash of the process
// (the embedded backend has synced its log; Scylla has acknowledged at the
// configured consistency).
type Store interface {
	// CreateConversation stores c and its initial members. It returns
	// ErrExists if a conversation with c.ID exists already (members are
	// then left untouched).
	CreateConversation(ctx context.Context, c Conversation, members []Member) error
	// Conversation returns one conversation or ErrNotFound.
	Conversation(ctx context.Context, id string) (Conversation, error)
	// SetTitle changes a conversation's title; ErrNotFound if it is unknown.
	SetTitle(ctx context.Context, id, title string) error

	// PutMember adds a member or changes its role. Watermarks of an existing
	// member are kept.
	PutMember(ctx context.Context, m Member) error
	// RemoveMember removes a member; ErrNotFound if it was not one.
	RemoveMember(ctx context.Context, conv, user string) error
	// Member returns one membership or ErrNotFound.
	Member(ctx context.Context, conv, user string) (Member, error)
	// Members returns every member of a conversation, ordered by user id.
	Members(ctx context.Context, conv string) ([]Member, error)
	// UserConversations returns the ids of the conversations a user belongs
	// to, ordered by id.
	UserConversations(ctx context.Context, user string) ([]string, error)

	// AppendMessages durably stores messages (of one or more
	// conversations) together with their client-id index entries. Storing
	// a message whose (conv, seq) holds the same message already (same
	// sender and client id) overwrites it (writes are idempotent); if the
	// seq holds another message, or another message is being stored at it
	// concurrently, nothing is stored and the error is ErrConflict (seqs
	// are claimed, never overwritten: several nodes assign them). It is
	// called concurrently; backends batch concurrent calls into shared
	// syncs (group commit).
	AppendMessages(ctx context.Context, msgs []Message) error
	// LookupClientID returns the seq stored for (conv, sender, cmid), or
	// ErrNotFound.
	LookupClientID(ctx context.Context, conv, sender, cmid string) (uint64, error)
	// Messages returns one page of a conversation's messages in ascending
	// seq order.
	Messages(ctx context.Context, conv string, p Page) ([]Message, error)
	// LastSeq returns the highest stored seq of a conversation (0 if none).
	LastSeq(ctx context.Context, conv string) (uint64, error)

	// SetWatermark raises a member's delivered or read watermark to seq
	// and reports whether it moved; a seq not above the stored one is
	// ignored (raised is false). ErrNotFound if the user is not a member.
	SetWatermark(ctx context.Context, conv, user string, kind ReceiptKind, seq uint64) (raised bool, err error)

	// PutDevice stores d (replacing the user's device of the same ID) and
	// takes d's (Platform, Topic, Token) away from any other device that
	// held it (that device is removed). It returns ErrExists if the user has
	// MaxDevicesPerUser other devices already (counted before the move: a
	// user at the limit cannot register a new device id even with a token
	// one of their own devices holds). Callers validate d.
	PutDevice(ctx context.Context, d Device) error
	// RemoveDevice removes a user's device; ErrNotFound if there is none.
	RemoveDevice(ctx context.Context, user, device string) error
	// Devices returns a user's devices, ordered by ID.
	Devices(ctx context.Context, user string) ([]Device, error)
	// DropToken removes the device that holds (platform, topic, token),
	// if any (a provider said the token is dead). A device that registered
	// a new token meanwhile is left alone.
	DropToken(ctx context.Context, platform, topic, token string) error

	// Close flushes and closes the store. Calls after Close return ErrClosed.
	Close() error
}
