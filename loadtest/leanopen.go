package loadtest

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/loadtest/lean"
)

// leanHooks lets a scenario see its lean connections' traffic. Both run
// on a reactor goroutine and must return quickly; c.Tag is the
// connection's index in openLeanHooked's tokens. Zero hooks: the
// connections only answer pings (idle, connect).
type leanHooks struct {
	// onMessage gets every frame but pings after hello (lean.Config.OnMessage).
	onMessage func(c *lean.Conn, frame []byte)
	// onClose is told when an established connection ends, after the run's
	// live count (lean.Config.OnClose).
	onClose func(c *lean.Conn, code int, err error)
}

// openLean opens n connections like openAll, with the lean client: no
// goroutine per connection, a few hundred bytes each, able to answer pings
// and record close codes but not to send requests. One pool per URL;
// connection i goes to URL d.urlFor(i).
func (d *dialer) openLean(ctx context.Context, n int, rate float64, tokens []string, keep bool) *openResult {
	return d.openLeanHooked(ctx, n, rate, tokens, keep, leanHooks{})
}

// openLeanHooked is openLean for a scenario that sends (c.Send) and reads
// replies and events, through h.
func (d *dialer) openLeanHooked(ctx context.Context, n int, rate float64, tokens []string, keep bool, h leanHooks) *openResult {
	res := &openResult{lat: newLatency()}
	rec := d.cfg.Recorder
	for _, u := range d.cfg.URLs {
		lc, err := leanConfig(u)
		if err == nil {
			lc.OnClose = func(c *lean.Conn, code int, err error) {
				d.cfg.live.leanClosed(code, err)
				if h.onClose != nil {
					h.onClose(c, code, err)
				}
			}
			lc.OnMessage = h.onMessage
			var p *lean.Pool
			if p, err = lean.New(lc); err == nil {
				res.pools = append(res.pools, p)
				continue
			}
		}
		for range n {
			res.failed(rec, "config", err)
		}
		res.close()
		return res
	}
	if keep {
		res.lean = make([]*lean.Conn, n)
	}
	d.schedule(ctx, n, rate, res, func(i int, at time.Time, done func()) {
		var src netip.Addr
		if m := len(d.cfg.SourceAddrs); m > 0 {
			src = d.cfg.SourceAddrs[int(d.next.Add(1)-1)%m]
		}
		u := d.urlFor(i)
		res.pools[u].Dial(src, tokens[i], func(c *lean.Conn, err error) {
			defer done()
			if err != nil {
				res.failed(rec, lean.ErrKind(err), err)
				return
			}
			c.Tag = int32(i) // before any onMessage: done runs first, on the reactor
			res.opened(rec, at, keep)
			d.cfg.live.openedOn(u)
			if keep {
				d.cfg.live.leanOpened()
				res.lean[i] = c
			} else {
				c.Close()
			}
		})
	})
	return res
}

// leanConfig turns a server base URL (ws://host:port) into a lean pool's
// configuration.
func leanConfig(raw string) (lean.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return lean.Config{}, fmt.Errorf("loadtest: URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "http":
	default:
		return lean.Config{}, fmt.Errorf("loadtest: URL %q: the lean client speaks ws:// only (use --client full for wss)", raw)
	}
	host := u.Host
	if u.Port() == "" {
		host += ":80"
	}
	path := strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(path, client.Path) {
		path += client.Path
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return lean.Config{Addr: host, Host: u.Host, Path: path}, nil
}
