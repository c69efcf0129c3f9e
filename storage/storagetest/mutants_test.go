package storagetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parley-im/parley/storage"
	"github.com/parley-im/parley/storage/embedded"
	"github.com/parley-im/parley/storage/storagetest"
)

// The suite is only worth something if it fails on broken stores. Each
// mutant wraps a correct store (the embedded one) and breaks one documented
// behaviour; TestSuiteCatchesMutants runs the suite against it in a child
// process and expects the named subtest to fail.

type mutant struct {
	name   string
	catch  string // the suite subtest that must fail
	mutate func(base storage.Store) storage.Store
}

var mutants = []mutant{
	{"PutMemberDropsWatermarks", "Member/PutKeepsWatermarks", func(b storage.Store) storage.Store {
		return &putDropsWatermarks{b}
	}},
	{"WatermarkMovesBack", "Watermark/Forward", func(b storage.Store) storage.Store {
		return &watermarkBack{b}
	}},
	{"CreateIgnoresExists", "Conversation/Exists", func(b storage.Store) storage.Store {
		return &createIgnoresExists{b}
	}},
	{"UserConversationsUnsorted", "Member/UserConversations", func(b storage.Store) storage.Store {
		return &userConvsReversed{b}
	}},
	{"MessagesDescending", "Message/Page", func(b storage.Store) storage.Store {
		return &messagesMut{Store: b, descending: true}
	}},
	{"AfterReturnsNewest", "Message/Page", func(b storage.Store) storage.Store {
		return &messagesMut{Store: b, afterNewest: true}
	}},
	{"LimitNotCapped", "Message/Page", func(b storage.Store) storage.Store {
		return &messagesMut{Store: b, noCap: true}
	}},
	{"MessagesBleedIntoLongerIDs", "IDs/Unusual", func(b storage.Store) storage.Store {
		return &messagesMut{Store: b, bleed: true}
	}},
	{"LastSeqFirstBucketOnly", "Message/LastSeq", func(b storage.Store) storage.Store {
		return &lastSeqFirstBucket{b}
	}},
	{"ClientIDIgnoresSender", "Message/ClientID", func(b storage.Store) storage.Store {
		return &clientIDAnySender{b}
	}},
	{"AppendLosesConcurrentWrites", "Message/ConcurrentAppend", func(b storage.Store) storage.Store {
		return &appendLoses{Store: b}
	}},
	{"AppendHidesConflicts", "Message/Conflict", func(b storage.Store) storage.Store {
		return &appendHidesConflicts{Store: b}
	}},
	{"PutDeviceKeepsOldOwner", "Device/TokenMoves", func(b storage.Store) storage.Store {
		return &tokenPerUser{Store: b}
	}},
	{"ConcurrentClaimsAllWin", "Device/ConcurrentClaims", func(b storage.Store) storage.Store {
		return &tokenPerUser{Store: b, onlyConcurrent: true}
	}},
	{"DropTokenIgnoresHolder", "Device/NewToken", func(b storage.Store) storage.Store {
		return &dropStale{Store: b, owners: map[[3]string][2]string{}}
	}},
	{"DevicesUnsorted", "Device/Ordered", func(b storage.Store) storage.Store {
		return &devicesReversed{b}
	}},
	{"DeviceLimitEvictsOldest", "Device/Limit", func(b storage.Store) storage.Store {
		return &limitEvicts{b}
	}},
	{"CloseForgotten", "Close/ErrClosed", func(b storage.Store) storage.Store {
		return &closeForgotten{Store: b}
	}},
}

const mutantEnv = "PARLEY_STORAGETEST_MUTANT"

// TestMutantChild is the child side: it runs the suite against the mutant
// named in the environment, and is skipped in a normal test run.
func TestMutantChild(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("only runs as the child of TestSuiteCatchesMutants")
	}
	i := slices.IndexFunc(mutants, func(m mutant) bool { return m.name == name })
	if i < 0 {
		t.Fatalf("unknown mutant %q", name)
	}
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := embedded.Open(t.TempDir(), embedded.Options{CacheSize: 4 << 20, MemTableSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return mutants[i].mutate(s)
	})
}

func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("child process")
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.v", "-test.run=^TestMutantChild$/^"+m.catch+"$")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("suite passed against mutant %s (err %v); output:\n%s", m.name, err, out)
			}
			if want := "--- FAIL: TestMutantChild/" + m.catch; !strings.Contains(string(out), want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		})
	}
}

type putDropsWatermarks struct{ storage.Store }

func (s *putDropsWatermarks) PutMember(ctx context.Context, m storage.Member) error {
	_ = s.Store.RemoveMember(ctx, m.Conv, m.User)
	return s.Store.PutMember(ctx, m)
}

type watermarkBack struct{ storage.Store }

// SetWatermark stores seq even when it is lower, by re-adding the member.
func (s *watermarkBack) SetWatermark(ctx context.Context, conv, user string, kind storage.ReceiptKind, seq uint64) (bool, error) {
	m, err := s.Store.Member(ctx, conv, user)
	if err != nil {
		return false, err
	}
	if kind == storage.ReceiptRead {
		m.ReadSeq = seq
	} else {
		m.DeliveredSeq = seq
	}
	if err := s.Store.RemoveMember(ctx, conv, user); err != nil {
		return false, err
	}
	return true, s.Store.PutMember(ctx, m)
}

type createIgnoresExists struct{ storage.Store }

func (s *createIgnoresExists) CreateConversation(ctx context.Context, c storage.Conversation, ms []storage.Member) error {
	if err := s.Store.CreateConversation(ctx, c, ms); !errors.Is(err, storage.ErrExists) {
		return err
	}
	return nil
}

type userConvsReversed struct{ storage.Store }

func (s *userConvsReversed) UserConversations(ctx context.Context, user string) ([]string, error) {
	out, err := s.Store.UserConversations(ctx, user)
	slices.Reverse(out)
	return out, err
}

type messagesMut struct {
	storage.Store
	descending, afterNewest, noCap, bleed bool
}

func (s *messagesMut) Messages(ctx context.Context, conv string, p storage.Page) ([]storage.Message, error) {
	if s.afterNewest && p.After > 0 {
		out, err := s.Store.Messages(ctx, conv, storage.Page{Before: p.Before, Limit: p.Limit})
		return slices.DeleteFunc(out, func(m storage.Message) bool { return m.Seq <= p.After }), err
	}
	out, err := s.Store.Messages(ctx, conv, p)
	if err != nil {
		return nil, err
	}
	if s.noCap && p.Limit > storage.MaxPage && p.After == 0 && len(out) == storage.MaxPage {
		older, err := s.Store.Messages(ctx, conv, storage.Page{Before: out[0].Seq, Limit: p.Limit - storage.MaxPage})
		if err != nil {
			return nil, err
		}
		out = append(older, out...)
	}
	if s.bleed {
		longer, err := s.Store.Messages(ctx, conv+"b", p)
		if err != nil {
			return nil, err
		}
		out = append(out, longer...)
	}
	if s.descending {
		slices.Reverse(out)
	}
	return out, nil
}

type lastSeqFirstBucket struct{ storage.Store }

func (s *lastSeqFirstBucket) LastSeq(ctx context.Context, conv string) (uint64, error) {
	page, err := s.Store.Messages(ctx, conv, storage.Page{Before: storage.BucketSize, Limit: 1})
	if err != nil || len(page) == 0 {
		return 0, err
	}
	return page[0].Seq, nil
}

type clientIDAnySender struct{ storage.Store }

func (s *clientIDAnySender) LookupClientID(ctx context.Context, conv, sender, cmid string) (uint64, error) {
	seq, err := s.Store.LookupClientID(ctx, conv, sender, cmid)
	if errors.Is(err, storage.ErrNotFound) {
		return s.Store.LookupClientID(ctx, conv, "a", cmid)
	}
	return seq, err
}

type appendHidesConflicts struct{ storage.Store }

// AppendMessages reports success when another message holds the seq (a
// backend with blind writes would make two nodes' messages share a seq).
func (s *appendHidesConflicts) AppendMessages(ctx context.Context, msgs []storage.Message) error {
	if err := s.Store.AppendMessages(ctx, msgs); err != nil && !errors.Is(err, storage.ErrConflict) {
		return err
	}
	return nil
}

type appendLoses struct {
	storage.Store
	calls atomic.Int64
}

// AppendMessages silently drops every 50th call.
func (s *appendLoses) AppendMessages(ctx context.Context, msgs []storage.Message) error {
	if s.calls.Add(1)%50 == 0 {
		return nil
	}
	return s.Store.AppendMessages(ctx, msgs)
}

type closeForgotten struct {
	storage.Store
	closed atomic.Bool
}

// Close closes the store once and pretends later calls succeed.
func (s *closeForgotten) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.Store.Close()
}

func (s *closeForgotten) AppendMessages(ctx context.Context, msgs []storage.Message) error {
	if s.closed.Load() {
		return nil
	}
	return s.Store.AppendMessages(ctx, msgs)
}

// tokenPerUser keys tokens by user as well (a token index that forgets a
// token belongs to one device): PutDevice never takes a token from another
// user's device. With onlyConcurrent it does so only while another PutDevice
// is in flight, like an unlocked check-then-write.
type tokenPerUser struct {
	storage.Store
	onlyConcurrent bool
	inFlight       atomic.Int64
}

const userSep = "\x00user="

func (s *tokenPerUser) PutDevice(ctx context.Context, d storage.Device) error {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if !s.onlyConcurrent || n > 1 {
		d.Topic += userSep + d.User
	}
	return s.Store.PutDevice(ctx, d)
}

func (s *tokenPerUser) Devices(ctx context.Context, user string) ([]storage.Device, error) {
	ds, err := s.Store.Devices(ctx, user)
	for i := range ds {
		ds[i].Topic, _, _ = strings.Cut(ds[i].Topic, userSep)
	}
	return ds, err
}

// dropStale remembers every device a token was ever registered for, and
// DropToken removes the last of them whether or not it still holds the
// token (a token index that PutDevice never cleans up).
type dropStale struct {
	storage.Store
	mu     sync.Mutex
	owners map[[3]string][2]string // guarded by mu
}

func (s *dropStale) PutDevice(ctx context.Context, d storage.Device) error {
	if err := s.Store.PutDevice(ctx, d); err != nil {
		return err
	}
	s.mu.Lock()
	s.owners[[3]string{d.Platform, d.Topic, d.Token}] = [2]string{d.User, d.ID}
	s.mu.Unlock()
	return nil
}

func (s *dropStale) DropToken(ctx context.Context, platform, topic, token string) error {
	if err := s.Store.DropToken(ctx, platform, topic, token); err != nil {
		return err
	}
	s.mu.Lock()
	o, ok := s.owners[[3]string{platform, topic, token}]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.Store.RemoveDevice(ctx, o[0], o[1]); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}

type devicesReversed struct{ storage.Store }

func (s *devicesReversed) Devices(ctx context.Context, user string) ([]storage.Device, error) {
	out, err := s.Store.Devices(ctx, user)
	slices.Reverse(out)
	return out, err
}

// limitEvicts makes room for a device above the limit by removing the
// user's first device instead of refusing it.
type limitEvicts struct{ storage.Store }

func (s *limitEvicts) PutDevice(ctx context.Context, d storage.Device) error {
	err := s.Store.PutDevice(ctx, d)
	if !errors.Is(err, storage.ErrExists) {
		return err
	}
	ds, err := s.Store.Devices(ctx, d.User)
	if err != nil || len(ds) == 0 {
		return err
	}
	if err := s.Store.RemoveDevice(ctx, d.User, ds[0].ID); err != nil {
		return err
	}
	return s.Store.PutDevice(ctx, d)
}
