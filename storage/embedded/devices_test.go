package embedded

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
)

// TestPutDeviceChecks covers what PutDevice refuses (the suite leaves
// validation to backends): each bad device returns an error that is none of
// storage's sentinels and stores nothing.
func TestPutDeviceChecks(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, t.TempDir())
	defer s.Close()
	good := storage.Device{User: "u", ID: "d", Platform: "ios", Token: "tok", Topic: "app"}
	for _, tc := range []struct {
		name string
		edit func(*storage.Device)
	}{
		{"no user", func(d *storage.Device) { d.User = "" }},
		{"no id", func(d *storage.Device) { d.ID = "" }},
		{"no platform", func(d *storage.Device) { d.Platform = "" }},
		{"other platform", func(d *storage.Device) { d.Platform = "web" }},
		{"no token", func(d *storage.Device) { d.Token = "" }},
		{"long token", func(d *storage.Device) { d.Token = strings.Repeat("t", storage.MaxTokenLen+1) }},
		{"no topic", func(d *storage.Device) { d.Topic = "" }},
		{"too many muted", func(d *storage.Device) { d.Muted = make([]string, storage.MaxMuted+1) }},
	} {
		d := good
		tc.edit(&d)
		err := s.PutDevice(ctx, d)
		if err == nil || errors.Is(err, storage.ErrExists) || !strings.HasPrefix(err.Error(), "embedded: put device") {
			t.Errorf("%s: PutDevice returned %v, want a validation error", tc.name, err)
		}
	}
	if ds, err := s.Devices(ctx, "u"); err != nil || len(ds) != 0 {
		t.Fatalf("after refused devices: %+v, %v", ds, err)
	}
	// The limits themselves are allowed.
	d := good
	d.Token = strings.Repeat("t", storage.MaxTokenLen)
	d.Muted = make([]string, storage.MaxMuted)
	if err := s.PutDevice(ctx, d); err != nil {
		t.Fatalf("PutDevice at the limits: %v", err)
	}
}

// TestDevicesReopen stores devices, reopens the store and finds them and
// their token index entries again.
func TestDevicesReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openTest(t, dir)
	d := storage.Device{User: "ann", ID: "phone", Platform: "android", Token: "tok", Topic: "app",
		Locale: "fr", Muted: []string{"c1"}, HideText: true, UpdatedAt: time.UnixMilli(1_700_000_000_123).UTC()}
	if err := s.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	defer s.Close()
	ds, err := s.Devices(ctx, "ann")
	if err != nil || len(ds) != 1 || !sameDevice(ds[0], d) {
		t.Fatalf("Devices after reopen = %+v, %v; want [%+v]", ds, err, d)
	}
	if err := s.DropToken(ctx, "android", "app", "tok"); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.Devices(ctx, "ann"); err != nil || len(ds) != 0 {
		t.Fatalf("Devices after DropToken = %+v, %v; want none", ds, err)
	}
}
