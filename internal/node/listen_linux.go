package node

import (
	"context"
	"net"
	"syscall"
)

// listenClients opens the client listener. TCP keepalive is set on the
// listening socket, which Linux copies to every accepted one, rather than
// by net on each accepted socket (four setsockopt calls per connection, a
// measurable share of a reconnect storm). The settings are net's defaults:
// on, 15 s idle, 15 s between probes, 9 probes.
func listenClients(addr string) (net.Listener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1, // set below, once
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				for _, o := range [...]struct{ level, opt, v int }{
					{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
				} {
					if err := syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil && serr == nil {
						serr = err
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}
