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

// openLean opens n connections like openAll, with the lean client: no
// goroutine per connection, a few hundred bytes each, able to answer pings
// and record close codes but not to send requests. One pool per URL.
func (d *dialer) openLean(ctx context.Context, n int, rate float64, tokens []string, keep bool) *openResult {
	res := &openResult{lat: newLatency()}
	rec := d.cfg.Recorder
	for _, u := range d.cfg.URLs {
		lc, err := leanConfig(u)
		if err == nil {
			lc.OnClose = func(_ *lean.Conn, code int, err error) { d.cfg.live.leanClosed(code, err) }
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
		k := int(d.next.Add(1) - 1)
		var src netip.Addr
		if m := len(d.cfg.SourceAddrs); m > 0 {
			src = d.cfg.SourceAddrs[k%m]
		}
		res.pools[k%len(res.pools)].Dial(src, tokens[i], func(c *lean.Conn, err error) {
			defer done()
			if err != nil {
				res.failed(rec, lean.ErrKind(err), err)
				return
			}
			res.opened(rec, at, keep)
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
