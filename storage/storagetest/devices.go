package storagetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/parley-im/parley/storage"
)

// topic is the app every test device registers for unless it says otherwise.
const topic = "im.parley.app"

// device returns a complete registration of user's device id with token.
func device(user, id, token string) storage.Device {
	return storage.Device{
		User: user, ID: id, Platform: "ios", Token: token, Topic: topic,
		Locale: "en", UpdatedAt: ts(100),
	}
}

func (e *env) putDevice(t *testing.T, d storage.Device) {
	t.Helper()
	must(t, e.s.PutDevice(e.ctx, d), fmt.Sprintf("PutDevice(%q/%q)", d.User, d.ID))
}

func (e *env) devices(t *testing.T, user string) []storage.Device {
	t.Helper()
	ds, err := e.s.Devices(e.ctx, user)
	must(t, err, fmt.Sprintf("Devices(%q)", user))
	return ds
}

func (e *env) dropToken(t *testing.T, d storage.Device) {
	t.Helper()
	must(t, e.s.DropToken(e.ctx, d.Platform, d.Topic, d.Token), fmt.Sprintf("DropToken(%q)", d.Token))
}

func sameDevice(a, b storage.Device) bool {
	return a.User == b.User && a.ID == b.ID && a.Platform == b.Platform && a.Token == b.Token &&
		a.Topic == b.Topic && a.Sandbox == b.Sandbox && a.Locale == b.Locale &&
		slices.Equal(a.Muted, b.Muted) && a.HideText == b.HideText && a.UpdatedAt.Equal(b.UpdatedAt)
}

// checkDevices fails unless user's devices are exactly want, in order.
func (e *env) checkDevices(t *testing.T, what, user string, want ...storage.Device) {
	t.Helper()
	got := e.devices(t, user)
	if len(got) != len(want) || !slices.EqualFunc(got, want, sameDevice) {
		t.Fatalf("%s: Devices(%q):\n got %+v\nwant %+v", what, user, got, want)
	}
}

func testPutDevice(t *testing.T, e *env) {
	ann := e.id("ann")
	e.checkDevices(t, "before PutDevice", ann)
	d := storage.Device{
		User: ann, ID: "phone", Platform: "ios", Token: "tok-" + e.prefix, Topic: topic,
		Sandbox: true, Locale: "pt-BR", Muted: []string{e.id("c1"), e.id("c\x002"), "日本"},
		HideText: true, UpdatedAt: ts(1_700_000_000),
	}
	e.putDevice(t, d)
	e.checkDevices(t, "after PutDevice", ann, d)

	// The other value of every field, on an Android device.
	d2 := storage.Device{User: ann, ID: "tablet", Platform: "android", Token: "fcm-" + e.prefix, Topic: "im.parley.android", UpdatedAt: ts(5)}
	e.putDevice(t, d2)
	e.checkDevices(t, "after second PutDevice", ann, d, d2)
}

func testUpdateDevice(t *testing.T, e *env) {
	bea := e.id("bea")
	d := device(bea, "phone", "tok-"+e.prefix)
	e.putDevice(t, d)
	e.putDevice(t, d) // again, unchanged
	e.checkDevices(t, "after putting the same device twice", bea, d)

	d.Locale, d.Muted, d.HideText, d.Sandbox, d.UpdatedAt = "de", []string{e.id("c")}, true, true, ts(200)
	e.putDevice(t, d)
	e.checkDevices(t, "after update", bea, d)
	d.Muted, d.HideText = nil, false
	e.putDevice(t, d)
	e.checkDevices(t, "after unmuting", bea, d)
}

// testTokenMoves registers one token for a device of another user: the old
// device goes, and the token belongs to the new one alone.
func testTokenMoves(t *testing.T, e *env) {
	cam, dan := e.id("cam"), e.id("dan")
	tok := "tok-" + e.prefix
	old := device(cam, "phone", tok)
	keep := device(cam, "watch", "other-"+e.prefix)
	e.putDevice(t, old)
	e.putDevice(t, keep)
	moved := device(dan, "phone", tok)
	moved.UpdatedAt = ts(300)
	e.putDevice(t, moved)
	e.checkDevices(t, "old user after the token moved", cam, keep)
	e.checkDevices(t, "new user after the token moved", dan, moved)

	// The old user re-registering the device with the token takes it back.
	e.putDevice(t, old)
	e.checkDevices(t, "new user after the token moved back", dan)
	e.checkDevices(t, "old user after the token moved back", cam, old, keep)

	// And the token index follows: dropping the token removes the
	// current holder only.
	e.dropToken(t, old)
	e.checkDevices(t, "old user after DropToken", cam, keep)
	e.checkDevices(t, "new user after DropToken", dan)

	// A token moving between two devices of one user.
	d1, d2 := device(dan, "a", tok), device(dan, "b", tok)
	e.putDevice(t, d1)
	e.putDevice(t, d2)
	e.checkDevices(t, "after moving a token between a user's devices", dan, d2)
}

// testNewToken re-registers a device with another token: the old token no
// longer names it, so dropping the old token leaves the device alone.
func testNewToken(t *testing.T, e *env) {
	eve, fay := e.id("eve"), e.id("fay")
	d := device(eve, "phone", "old-"+e.prefix)
	e.putDevice(t, d)
	oldTok := d
	d.Token = "new-" + e.prefix
	e.putDevice(t, d)
	e.checkDevices(t, "after the new token", eve, d)

	e.dropToken(t, oldTok)
	e.checkDevices(t, "after DropToken of the old token", eve, d)

	// Nor does the old token take the device along when someone else
	// registers it.
	f := device(fay, "phone", oldTok.Token)
	e.putDevice(t, f)
	e.checkDevices(t, "after another user took the old token", eve, d)
	e.checkDevices(t, "the user who took the old token", fay, f)

	// A new topic or platform is a new token too.
	d.Topic = "im.parley.other"
	e.putDevice(t, d)
	d.Platform = "android"
	e.putDevice(t, d)
	e.dropToken(t, device(eve, "phone", d.Token)) // ios, the default topic
	old := d
	old.Platform = "ios"
	e.dropToken(t, old) // ios, the other topic
	e.checkDevices(t, "after dropping the device's earlier topic and platform", eve, d)
	e.dropToken(t, d)
	e.checkDevices(t, "after DropToken of the current token", eve)
}

func testRemoveDevice(t *testing.T, e *env) {
	gus := e.id("gus")
	d, keep := device(gus, "phone", "tok-"+e.prefix), device(gus, "tablet", "tab-"+e.prefix)
	e.putDevice(t, d)
	e.putDevice(t, keep)
	must(t, e.s.RemoveDevice(e.ctx, gus, d.ID), "RemoveDevice")
	e.checkDevices(t, "after RemoveDevice", gus, keep)
	wantErr(t, e.s.RemoveDevice(e.ctx, gus, d.ID), storage.ErrNotFound, "second RemoveDevice")
	wantErr(t, e.s.RemoveDevice(e.ctx, e.id("nobody"), d.ID), storage.ErrNotFound, "RemoveDevice(unknown user)")
	wantErr(t, e.s.RemoveDevice(e.ctx, gus, "nope"), storage.ErrNotFound, "RemoveDevice(unknown device)")

	// The removed device's token is free: dropping it is a no-op, and
	// registering it again works.
	e.dropToken(t, d)
	e.checkDevices(t, "after DropToken of a removed device's token", gus, keep)
	e.putDevice(t, d)
	e.checkDevices(t, "after registering the removed device again", gus, d, keep)
}

func testDropToken(t *testing.T, e *env) {
	hal, ida := e.id("hal"), e.id("ida")
	tok := "tok-" + e.prefix
	d := device(hal, "phone", tok)
	// The same token string under another topic and on another platform is
	// another registration.
	otherTopic := device(ida, "phone", tok)
	otherTopic.Topic = "im.parley.other"
	otherPlatform := device(ida, "tablet", tok)
	otherPlatform.Platform = "android"
	e.putDevice(t, d)
	e.putDevice(t, otherTopic)
	e.putDevice(t, otherPlatform)
	e.checkDevices(t, "one token string, three registrations", ida, otherTopic, otherPlatform)
	e.checkDevices(t, "one token string, three registrations", hal, d)

	must(t, e.s.DropToken(e.ctx, "ios", topic, "unknown-"+e.prefix), "DropToken(unknown token)")
	e.dropToken(t, d)
	e.checkDevices(t, "after DropToken", hal)
	e.checkDevices(t, "other registrations of the token string after DropToken", ida, otherTopic, otherPlatform)
	e.dropToken(t, d) // again: nothing holds it
	e.dropToken(t, otherPlatform)
	e.checkDevices(t, "after DropToken(android)", ida, otherTopic)
}

// testDeviceLimit fills a user's devices up to MaxDevicesPerUser.
func testDeviceLimit(t *testing.T, e *env) {
	joy := e.id("joy")
	var want []storage.Device
	for i := range storage.MaxDevicesPerUser {
		d := device(joy, fmt.Sprintf("d%03d", i), fmt.Sprintf("tok%d-%s", i, e.prefix))
		e.putDevice(t, d)
		want = append(want, d)
	}
	extra := device(joy, "extra", "extra-"+e.prefix)
	wantErr(t, e.s.PutDevice(e.ctx, extra), storage.ErrExists, "PutDevice above the limit")
	e.checkDevices(t, "after PutDevice above the limit", joy, want...)
	// Nothing of the refused device was stored: its token is free.
	e.dropToken(t, extra)
	e.checkDevices(t, "after DropToken of the refused token", joy, want...)

	// Updating one of the devices is no new device.
	want[3].Locale, want[3].Token = "fr", "retoken-"+e.prefix
	e.putDevice(t, want[3])
	e.checkDevices(t, "after updating a device at the limit", joy, want...)

	// Another user is not limited by joy's devices.
	e.putDevice(t, device(e.id("kim"), "phone", "kim-"+e.prefix))

	must(t, e.s.RemoveDevice(e.ctx, joy, want[0].ID), "RemoveDevice")
	e.putDevice(t, extra)
	e.checkDevices(t, "after replacing a device", joy, append(want[1:], extra)...)
}

// testDevicesOrdered registers devices with unusual ids in random order,
// for users whose ids are prefixes of each other.
func testDevicesOrdered(t *testing.T, e *env) {
	want := map[string][]storage.Device{}
	var all []storage.Device
	for i, usuf := range []string{"", "a", "a\x00", "ab"} {
		user := e.id("u" + usuf)
		for j, dsuf := range unusualSuffixes {
			d := device(user, "d"+dsuf, fmt.Sprintf("tok%d.%d-%s", i, j, e.prefix))
			want[user] = append(want[user], d)
			all = append(all, d)
		}
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, d := range all {
		e.putDevice(t, d)
	}
	for user, ds := range want {
		slices.SortFunc(ds, func(a, b storage.Device) int { return strings.Compare(a.ID, b.ID) })
		e.checkDevices(t, "devices of unusual ids", user, ds...)
	}
}

// testConcurrentTokenClaims has many users register one token at the same
// time, round after round: each round ends with exactly one holder, and the
// token index agrees with it (dropping the token removes that device and
// leaves no registration behind).
func testConcurrentTokenClaims(t *testing.T, e *env) {
	const users, rounds = 8, 5
	var ids []string
	for u := range users {
		ids = append(ids, e.id(fmt.Sprintf("u%d", u)))
	}
	for r := range rounds {
		tok := fmt.Sprintf("tok%d-%s", r, e.prefix)
		var wg sync.WaitGroup
		for _, user := range ids {
			wg.Go(func() {
				if err := e.s.PutDevice(e.ctx, device(user, "phone", tok)); err != nil {
					t.Errorf("PutDevice(%q): %v", user, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		var holders []string
		for _, user := range ids {
			for _, d := range e.devices(t, user) {
				if d.Token != tok {
					t.Fatalf("round %d: %q has a device with token %q", r, user, d.Token)
				}
				holders = append(holders, user)
			}
		}
		if len(holders) != 1 {
			t.Fatalf("round %d: %d devices hold the token (%q), want 1", r, len(holders), holders)
		}
		if r > 0 {
			// The previous round's token, if its holder kept it, moved
			// to this round's token with the holder's device: dropping
			// it must leave this round's holder alone.
			must(t, e.s.DropToken(e.ctx, "ios", topic, fmt.Sprintf("tok%d-%s", r-1, e.prefix)), "DropToken(previous token)")
			e.checkDevices(t, fmt.Sprintf("round %d: after DropToken of the previous token", r), holders[0], device(holders[0], "phone", tok))
		}
		if r%2 == 1 {
			// The holder stays, so the next round's claims also replace
			// the token of a device that holds one.
			continue
		}
		e.dropToken(t, device(holders[0], "phone", tok))
		for _, user := range ids {
			e.checkDevices(t, fmt.Sprintf("round %d: after DropToken", r), user)
		}
	}
}

// testConcurrentDevices runs PutDevice, RemoveDevice and DropToken from
// many goroutines over a few users and tokens, so that tokens move between
// users and devices while they are removed and dropped. Afterwards every
// token has at most one holder, and the token index agrees with the rows:
// dropping every token leaves no device behind.
func testConcurrentDevices(t *testing.T, e *env) {
	const users, tokens, workers, ops = 4, 6, 8, 40
	user := func(i int) string { return e.id(fmt.Sprintf("u%d", i)) }
	token := func(i int) string { return fmt.Sprintf("tok%d-%s", i, e.prefix) }
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range ops {
				u, id, tok := user(rand.IntN(users)), fmt.Sprintf("d%d", rand.IntN(2)), token(rand.IntN(tokens))
				var err error
				switch n := rand.IntN(10); {
				case n < 7:
					err = e.s.PutDevice(e.ctx, device(u, id, tok))
				case n < 8:
					if err = e.s.RemoveDevice(e.ctx, u, id); errors.Is(err, storage.ErrNotFound) {
						err = nil
					}
				default:
					err = e.s.DropToken(e.ctx, "ios", topic, tok)
				}
				if err != nil {
					t.Errorf("concurrent device write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	holder := map[string]string{}
	for i := range users {
		for _, d := range e.devices(t, user(i)) {
			if h, ok := holder[d.Token]; ok {
				t.Fatalf("token %q held by %s and %q/%q", d.Token, h, d.User, d.ID)
			}
			holder[d.Token] = d.User + "/" + d.ID
		}
	}
	for i := range tokens {
		must(t, e.s.DropToken(e.ctx, "ios", topic, token(i)), "DropToken")
	}
	for i := range users {
		e.checkDevices(t, "after dropping every token", user(i))
	}
}
