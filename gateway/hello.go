package gateway

import (
	"encoding/json"
	"strconv"

	"github.com/parley-im/parley/protocol"
)

// hello returns the hello frame of a new session.
func (s *Server) hello(sess *session) protocol.Hello {
	return protocol.Hello{
		Type:        protocol.TypeHello,
		Session:     sessionName(sess.id),
		User:        sess.user,
		Device:      sess.dev,
		Node:        s.cfg.Node,
		HeartbeatMS: s.cfg.Heartbeat.Milliseconds(),
		IdleMS:      s.cfg.IdleTimeout.Milliseconds(),
		ServerTime:  s.cfg.Now().UnixMilli(),
		TokenExp:    sess.exp.Load(),
		MaxMessage:  protocol.MaxMessage,
	}
}

func sessionName(id uint64) string { return "s" + strconv.FormatUint(id, 36) }

// helloTail encodes the part of hello frames fixed for a server, from the
// node to the key of server_time; see appendHello.
func helloTail(cfg Config) []byte {
	node, _ := json.Marshal(cfg.Node) // a string always encodes
	b := append([]byte(`,"node":`), node...)
	b = append(b, `,"heartbeat_ms":`...)
	b = strconv.AppendInt(b, cfg.Heartbeat.Milliseconds(), 10)
	b = append(b, `,"idle_timeout_ms":`...)
	b = strconv.AppendInt(b, cfg.IdleTimeout.Milliseconds(), 10)
	return append(b, `,"server_time":`...)
}

// appendHello encodes the hello frame of sess without resume state: the
// bytes protocol.Marshal(s.hello(sess)) gives (a test holds them equal),
// without reflection and with one allocation, for every connection of a
// reconnect storm. User and device ids are plain ASCII (auth.ValidID), for
// which protocol.AppendString and encoding/json agree.
func (s *Server) appendHello(sess *session) []byte {
	b := make([]byte, 0, 128+len(sess.user)+len(sess.dev)+len(s.helloTail))
	b = append(b, `{"type":"`+protocol.TypeHello+`","session":"s`...)
	b = strconv.AppendUint(b, sess.id, 36)
	b = append(b, `","user":`...)
	b = protocol.AppendString(b, sess.user)
	b = append(b, `,"device":`...)
	b = protocol.AppendString(b, sess.dev)
	b = append(b, s.helloTail...)
	b = strconv.AppendInt(b, s.cfg.Now().UnixMilli(), 10)
	b = append(b, `,"token_exp":`...)
	b = strconv.AppendInt(b, sess.exp.Load(), 10)
	b = append(b, `,"max_message":`...)
	b = strconv.AppendInt(b, protocol.MaxMessage, 10)
	return append(b, '}')
}
