package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Zero values mean the documented defaults;
// "zero means no limit" never happens by accident: every limit has a default.
type Config struct {
	Hub      *hub.Hub       // required
	Verifier *auth.Verifier // required
	Logger   *slog.Logger   // default slog.Default()
	Now      func() time.Time
	// Registry receives the gateway's metrics; nil: not registered.
	Registry prometheus.Registerer

	// TokenLeeway is the clock skew allowed past a token's exp before an
	// open session is closed with CloseTokenExpired; use the verifier's
	// leeway. Zero means none.
	TokenLeeway time.Duration
	// Node is reported in hello. Default: the hub's node.
	Node string
	// Heartbeat is the server ping interval (DESIGN: 25-60 s for battery).
	// Default 25 s.
	Heartbeat time.Duration
	// IdleTimeout closes a connection that sent nothing for this long.
	// Default 2×Heartbeat + 10 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the HTTP upgrade. Default 10 s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one socket write. Default 10 s.
	WriteTimeout time.Duration
	// QueueFrames and QueueBytes bound a connection's durable outbound
	// queue; overflowing either disconnects it with CloseSlowConsumer.
	// Defaults 1024 frames and 4 MiB.
	QueueFrames int
	QueueBytes  int
	// MaxEphemeral bounds pending ephemeral values (topic events, typing,
	// presence, receipts) per connection; the oldest is dropped beyond it.
	// Default 256.
	MaxEphemeral int
	// MaxConnsPerUser caps one user's simultaneous connections on this
	// node. Default 16.
	MaxConnsPerUser int
	// FrameRate and FrameBurst are the per-connection token bucket for
	// client frames (pongs are free). Defaults 50/s, burst 200.
	FrameRate  float64
	FrameBurst float64
	// UserRate and UserBurst are the per-user bucket over all the user's
	// connections and the HTTP API. Defaults 100/s, burst 400.
	UserRate  float64
	UserBurst float64
	// ConnectRate and ConnectBurst limit new connections per client IP.
	// Defaults 200/s, burst 2000. Load tests raise them.
	ConnectRate  float64
	ConnectBurst float64
	// OriginPatterns are the browser origins allowed to connect (see
	// websocket.AcceptOptions). Empty: same origin only, any in dev mode.
	OriginPatterns []string
	// DrainBatch and DrainInterval pace graceful drain: this many
	// connections are told to leave per interval. Defaults 500 and 100 ms.
	DrainBatch    int
	DrainInterval time.Duration
	// DrainJitter is the spread of the reconnect delays given in bye
	// frames. Default 5 s.
	DrainJitter time.Duration
	// MaxHTTPBody bounds HTTP API request bodies. Default 64 KiB.
	MaxHTTPBody int64
	// ReadBuffer and WriteBuffer size the per-connection bufio buffers
	// kept for the connection's life. Defaults 256 and 512 bytes: larger
	// reads bypass the buffer, and a larger write costs one more syscall.
	ReadBuffer  int
	WriteBuffer int
	// DevTokens enables POST /v1/dev/token and the demo page. Set it only
	// in dev mode (the server logs loudly).
	DevTokens bool
	// DevKey signs dev tokens. Required with DevTokens.
	DevKey []byte
	// Demo, when set, is served at / (the demo page, in dev mode).
	Demo http.Handler
}

func (c *Config) setDefaults() error {
	if c.Hub == nil || c.Verifier == nil {
		return errors.New("gateway: Config.Hub and Config.Verifier are required")
	}
	if c.DevTokens && len(c.DevKey) == 0 {
		return errors.New("gateway: DevTokens needs DevKey")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Node == "" {
		c.Node = c.Hub.Node()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defF := func(d *float64, v float64) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, 25*time.Second)
	def(&c.IdleTimeout, 2*c.Heartbeat+10*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	defInt(&c.QueueFrames, 1024)
	defInt(&c.QueueBytes, 4<<20)
	defInt(&c.MaxEphemeral, 256)
	defInt(&c.MaxConnsPerUser, 16)
	defF(&c.FrameRate, 50)
	defF(&c.FrameBurst, 200)
	defF(&c.UserRate, 100)
	defF(&c.UserBurst, 400)
	defF(&c.ConnectRate, 200)
	defF(&c.ConnectBurst, 2000)
	defInt(&c.DrainBatch, 500)
	def(&c.DrainInterval, 100*time.Millisecond)
	def(&c.DrainJitter, 5*time.Second)
	if c.MaxHTTPBody <= 0 {
		c.MaxHTTPBody = 64 << 10
	}
	defInt(&c.ReadBuffer, 256)
	defInt(&c.WriteBuffer, 512)
	if c.IdleTimeout <= c.Heartbeat {
		return errors.New("gateway: IdleTimeout must exceed Heartbeat")
	}
	return nil
}
