package storagetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parley-im/parley/storage"
)

func testClose(t *testing.T, e *env) {
	conv, user := e.group(t, "c", e.id("u")), e.id("u")
	e.append(t, msg(conv, 1))
	must(t, e.s.Close(), "Close")

	calls := map[string]func() error{
		"CreateConversation": func() error {
			return e.s.CreateConversation(e.ctx, storage.Conversation{ID: e.id("new"), Kind: storage.KindGroup, CreatedAt: ts(1)}, nil)
		},
		"Conversation": func() error { _, err := e.s.Conversation(e.ctx, conv); return err },
		"SetTitle":     func() error { return e.s.SetTitle(e.ctx, conv, "t") },
		"PutMember": func() error {
			return e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: user, Role: storage.RoleAdmin})
		},
		"RemoveMember":      func() error { return e.s.RemoveMember(e.ctx, conv, user) },
		"Member":            func() error { _, err := e.s.Member(e.ctx, conv, user); return err },
		"Members":           func() error { _, err := e.s.Members(e.ctx, conv); return err },
		"UserConversations": func() error { _, err := e.s.UserConversations(e.ctx, user); return err },
		"AppendMessages":    func() error { return e.s.AppendMessages(e.ctx, msgs(conv, 2)) },
		"AppendMessages(nil)": func() error {
			return e.s.AppendMessages(e.ctx, nil)
		},
		"LookupClientID": func() error { _, err := e.s.LookupClientID(e.ctx, conv, "user1", "cm-1"); return err },
		"Messages":       func() error { _, err := e.s.Messages(e.ctx, conv, storage.Page{}); return err },
		"Messages(empty range)": func() error {
			_, err := e.s.Messages(e.ctx, conv, storage.Page{After: 5, Before: 5})
			return err
		},
		"LastSeq":      func() error { _, err := e.s.LastSeq(e.ctx, conv); return err },
		"SetWatermark": func() error { _, err := e.s.SetWatermark(e.ctx, conv, user, storage.ReceiptRead, 1); return err },
		"PutDevice": func() error {
			return e.s.PutDevice(e.ctx, device(user, "phone", "tok-"+e.prefix))
		},
		"RemoveDevice": func() error { return e.s.RemoveDevice(e.ctx, user, "phone") },
		"Devices":      func() error { _, err := e.s.Devices(e.ctx, user); return err },
		"DropToken":    func() error { return e.s.DropToken(e.ctx, "ios", topic, "tok-"+e.prefix) },
		"Close":        e.s.Close,
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}

// testCloseDuringWrites closes the store under load: every call must either
// succeed or return ErrClosed (no panic, no other error, no hang), and once
// Close has returned, every call returns ErrClosed.
func testCloseDuringWrites(t *testing.T, e *env) {
	conv := e.id("c")
	const workers = 6
	var (
		wg      sync.WaitGroup
		next    atomic.Uint64
		started = make(chan struct{}, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				if w%3 == 2 {
					_, err = e.s.Messages(e.ctx, conv, storage.Page{Limit: 10})
				} else {
					err = e.s.AppendMessages(e.ctx, msgs(conv, next.Add(1)))
				}
				if i == 0 {
					started <- struct{}{}
				}
				if errors.Is(err, storage.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("call during Close: %v", err)
					return
				}
			}
		})
	}
	for range workers {
		<-started
	}
	must(t, e.s.Close(), "Close")
	_, err := e.s.LastSeq(e.ctx, conv)
	wantErr(t, err, storage.ErrClosed, "LastSeq after Close")
	wg.Wait()
}
