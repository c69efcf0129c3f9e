package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The durable queue. Jobs go to a JetStream work-queue stream; every node
// consumes it through one shared durable pull consumer, so each job goes to
// one node at a time (the queue group of the design) and comes back after
// AckWait if that node dies before acknowledging it.
//
// Deduplication, per (device, message):
//   - enqueue: the job id is the JetStream message id (Nats-Msg-Id), so the
//     same job published twice within the stream's duplicate window is
//     stored once;
//   - send: before sending to a device the worker looks up the (job,
//     device) key in a key-value bucket of sent pushes, and records it once
//     the provider accepted the push, before acknowledging the job. A
//     redelivered job (a node killed between dequeue and send, a retry after
//     a 429 for another device) skips the devices already served.
//
// The one window left is a node dying after the provider accepted a push
// and before the key is recorded: the push is then sent again, with the
// same collapse id and (APNs) the same apns-id, so the device replaces the
// first one instead of showing two.
const (
	StreamName   = "PARLEY_PUSH"
	subjectJobs  = "parley.push.jobs"
	consumerName = "parley-push-senders"
	sentBucket   = "PARLEY_PUSH_SENT"
)

// Job is one message to push to one user's devices. The worker resolves
// devices, tokens and content when it sends, not when the job is queued: a
// token that moved to another user meanwhile is never used for this one.
type Job struct {
	User string `json:"user"`
	Conv string `json:"conv"`
	Seq  uint64 `json:"seq"`
	// At is when the message was acked (unix ms): the delivery window of
	// online devices runs from it.
	At int64 `json:"at"`
}

// ID is the job's deduplication id.
func (j Job) ID() string { return fmt.Sprintf("%s:%s:%d", j.User, j.Conv, j.Seq) }

// Target is one notification the planner wants sent now.
type Target struct {
	Device string // the user's device id
	N      Notification
}

// Planner decides, when a job is handled, which devices get a push now.
type Planner interface {
	// Plan returns the pushes to send now and, if some devices must be
	// looked at again later (online, delivery not yet confirmed), how long
	// to wait. A job with nothing to send and no wait is done.
	Plan(ctx context.Context, j Job) (targets []Target, wait time.Duration, err error)
	// DropToken forgets a token a provider called dead.
	DropToken(ctx context.Context, platform, topic, token string) error
	// HasDevices reports whether user has any push registration; jobs
	// for users without one are not queued (a registration made after
	// the message misses that message's push).
	HasDevices(ctx context.Context, user string) bool
}

// Config configures a Pipeline. Zero values are documented.
type Config struct {
	NATS *nats.Conn // required; its server(s) must have JetStream enabled
	// Replicas of the stream and bucket: 1 on one NATS server, 3 on a
	// cluster. 0 means 1.
	Replicas  int
	Providers map[Platform]Provider // required (at least one)
	Planner   Planner               // required
	// Workers bounds the jobs one node handles at once; 0 means 32.
	Workers int
	// AckWait is how long a job may stay unacknowledged before another node
	// gets it; 0 means 30 s. It must exceed SendTimeout.
	AckWait time.Duration
	// SendTimeout bounds one provider call; 0 means 10 s (at most a third
	// of AckWait).
	SendTimeout time.Duration
	// MaxDeliver bounds how often a job is tried; 0 means 20.
	MaxDeliver int
	// MaxAge drops jobs older than this (a push an hour late is noise); 0
	// means 1 h. It is also how long sent keys are remembered.
	MaxAge time.Duration
	// MaxBytes bounds the stream's storage on each replica; 0 means 1 GiB
	// (it must fit the NATS servers' JetStream max store).
	MaxBytes int64
	// QueueSize bounds messages waiting to have their jobs published; 0
	// means 65536. Beyond it Enqueue drops (counted): the push path never
	// blocks a send.
	QueueSize int
	Logger    *slog.Logger
	Registry  prometheus.Registerer // nil: metrics not registered
}

// Pipeline is the push queue and its workers on this node.
type Pipeline struct {
	cfg  Config
	log  *slog.Logger
	js   jetstream.JetStream
	cons jetstream.Consumer
	sent jetstream.KeyValue
	m    metrics

	in   chan batch // jobs to publish
	stop chan struct{}
	wg   sync.WaitGroup
	cc   jetstream.ConsumeContext
	sem  chan struct{} // Workers slots
	once sync.Once
}

type metrics struct {
	enqueued, dropped, published, duplicates, skipped prometheus.Counter
	sends                                             *prometheus.CounterVec // provider, outcome
	latency                                           *prometheus.HistogramVec
	jobs                                              *prometheus.CounterVec // result
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		enqueued:   prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_enqueued_total", Help: "Push jobs handed to the queue."}),
		dropped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_enqueue_dropped_total", Help: "Push jobs dropped because the publish buffer was full or NATS refused them."}),
		published:  prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_published_total", Help: "Push jobs stored in the stream."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_duplicate_jobs_total", Help: "Push jobs the stream had already (same id within the duplicate window)."}),
		skipped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_already_sent_total", Help: "Device pushes skipped because a previous delivery of the job sent them."}),
		sends:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_push_sends_total", Help: "Provider calls by provider and outcome."}, []string{"provider", "outcome"}),
		latency:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "parley_push_send_seconds", Help: "Provider call latency.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"provider"}),
		jobs:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_push_jobs_total", Help: "Push job deliveries by result: done, waiting, retry, error, bad."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.enqueued, m.dropped, m.published, m.duplicates, m.skipped, m.sends, m.latency, m.jobs)
	}
	return m
}

// New creates (or updates) the stream, the shared consumer and the sent
// bucket. It waits up to 30 s for JetStream (a cluster elects its meta
// leader first).
func New(cfg Config) (*Pipeline, error) {
	switch {
	case cfg.NATS == nil:
		return nil, errors.New("push: Config.NATS is required")
	case len(cfg.Providers) == 0:
		return nil, errors.New("push: no provider configured")
	case cfg.Planner == nil:
		return nil, errors.New("push: Config.Planner is required")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = min(10*time.Second, cfg.AckWait/3)
	}
	if cfg.AckWait <= cfg.SendTimeout {
		return nil, fmt.Errorf("push: AckWait %v must exceed SendTimeout %v", cfg.AckWait, cfg.SendTimeout)
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 20
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1 << 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("push: jetstream: %w", err)
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger.With("component", "push"), js: js, m: newMetrics(cfg.Registry),
		in: make(chan batch, cfg.QueueSize), stop: make(chan struct{}), sem: make(chan struct{}, cfg.Workers)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		// Each attempt gets a few seconds: a request made before the
		// cluster elected its meta leader may never be answered.
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		serr := p.setup(actx)
		acancel()
		if serr == nil {
			err = nil
			break
		}
		if ctx.Err() != nil {
			if err == nil {
				err = serr
			}
			break
		}
		err = serr // the last error that was not the deadline
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("push: set up the queue (is JetStream enabled on the NATS servers?): %w", err)
	}
	return p, nil
}

func (p *Pipeline) setup(ctx context.Context) error {
	_, err := p.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Parley push jobs (work queue)",
		Subjects:    []string{subjectJobs},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    p.cfg.Replicas,
		MaxAge:      p.cfg.MaxAge,
		MaxMsgs:     10_000_000,
		MaxBytes:    p.cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	p.cons, err = p.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:       consumerName,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.cfg.AckWait,
		MaxDeliver:    p.cfg.MaxDeliver,
		MaxAckPending: 10_000,
		Replicas:      p.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	p.sent, err = p.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      sentBucket,
		Description: "Parley pushes sent, per (job, device)",
		TTL:         p.cfg.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    p.cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("sent bucket: %w", err)
	}
	return nil
}

// Start runs the publisher and the workers until Close.
func (p *Pipeline) Start() error {
	cc, err := p.cons.Consume(p.handle, jetstream.PullMaxMessages(p.cfg.Workers),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.log.Debug("push consume", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("push: consume: %w", err)
	}
	p.cc = cc
	p.wg.Add(1)
	go p.publishLoop()
	return nil
}

// Close stops consuming, lets running jobs finish (or be redelivered
// elsewhere after AckWait) and publishes what is buffered.
func (p *Pipeline) Close() {
	p.once.Do(func() {
		if p.cc != nil {
			p.cc.Stop()
		}
		close(p.stop)
		p.wg.Wait()
	})
}

// batch is one message's jobs: one per user in users but except.
type batch struct {
	users  []string // read-only (shared with the caller)
	except string
	conv   string
	seq    uint64
	at     int64
}

// EnqueueMessage queues one job per user of users but except, for message
// seq of conv acked at at (unix ms), without blocking: the jobs are made
// and published on the pipeline's goroutine, so a message to a large group
// costs its sender one channel send. users must not be modified afterwards.
// A full buffer drops the message's jobs and counts them (the members get
// the message on their next sync, not a push).
func (p *Pipeline) EnqueueMessage(users []string, except, conv string, seq uint64, at int64) {
	select {
	case p.in <- batch{users: users, except: except, conv: conv, seq: seq, at: at}:
	default:
		p.m.dropped.Add(float64(len(users)))
	}
}

func (p *Pipeline) publishLoop() {
	defer p.wg.Done()
	for {
		select {
		case b := <-p.in:
			p.publishBatch(b)
		case <-p.stop:
			for {
				select {
				case b := <-p.in:
					p.publishBatch(b)
				default:
					return
				}
			}
		}
	}
}

func (p *Pipeline) publishBatch(b batch) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range b.users {
		if u == b.except || !p.cfg.Planner.HasDevices(ctx, u) {
			continue
		}
		p.m.enqueued.Inc()
		p.publish(Job{User: u, Conv: b.conv, Seq: b.seq, At: b.at})
	}
}

func (p *Pipeline) publish(j Job) {
	b, err := json.Marshal(j)
	if err != nil {
		p.m.dropped.Inc()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := p.js.Publish(ctx, subjectJobs, b, jetstream.WithMsgID(j.ID()))
	if err != nil {
		p.m.dropped.Inc()
		p.log.Warn("push job not queued", "conv", j.Conv, "seq", j.Seq, "err", err)
		return
	}
	if ack.Duplicate {
		p.m.duplicates.Inc()
		return
	}
	p.m.published.Inc()
}

// handle runs on the consumer's goroutine: it takes a worker slot and
// handles the job on its own goroutine.
func (p *Pipeline) handle(msg jetstream.Msg) {
	select {
	case p.sem <- struct{}{}:
	case <-p.stop:
		return // not acked: redelivered after AckWait
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.sem }()
		p.work(msg)
	}()
}

// backoff is the wait before retrying a job tried n times: exponential from
// 1 s, capped at 5 min, jittered between half and all of it so that jobs
// failed by one provider outage do not come back together.
func backoff(n uint64) time.Duration {
	d := min(time.Second<<min(n-1, 9), 5*time.Minute)
	return d/2 + rand.N(d/2+1)
}

func (p *Pipeline) work(msg jetstream.Msg) {
	var j Job
	if err := json.Unmarshal(msg.Data(), &j); err != nil || j.User == "" || j.Conv == "" || j.Seq == 0 {
		p.m.jobs.WithLabelValues("bad").Inc()
		_ = msg.Term()
		return
	}
	meta, _ := msg.Metadata()
	tries := uint64(1)
	if meta != nil {
		tries = meta.NumDelivered
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckWait-time.Second)
	defer cancel()
	targets, wait, err := p.cfg.Planner.Plan(ctx, j)
	if err != nil {
		p.m.jobs.WithLabelValues("error").Inc()
		p.log.Warn("push plan failed", "conv", j.Conv, "seq", j.Seq, "err", err)
		_ = msg.NakWithDelay(backoff(tries))
		return
	}
	var retry time.Duration
	retrying := false
	for i := range targets {
		t := &targets[i]
		key := sentKey(j, t.Device)
		if _, err := p.sent.Get(ctx, key); err == nil {
			p.m.skipped.Inc()
			continue
		}
		prov := p.cfg.Providers[t.N.Platform]
		if prov == nil {
			p.m.sends.WithLabelValues(string(t.N.Platform), "no_provider").Inc()
			continue
		}
		sctx, scancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
		t0 := time.Now()
		r := prov.Send(sctx, &t.N)
		scancel()
		p.m.latency.WithLabelValues(prov.Name()).Observe(time.Since(t0).Seconds())
		p.m.sends.WithLabelValues(prov.Name(), r.Outcome.String()).Inc()
		switch r.Outcome {
		case Sent:
			if _, err := p.sent.Put(ctx, key, nil); err != nil {
				p.log.Warn("push sent but not recorded", "err", err)
			}
		case InvalidToken:
			p.log.Info("push token dropped", "provider", prov.Name(), "reason", r.Reason, "token", Redact(t.N.Token))
			if err := p.cfg.Planner.DropToken(ctx, string(t.N.Platform), t.N.Topic, t.N.Token); err != nil {
				p.log.Warn("push token not dropped", "err", err)
			}
		case Rejected:
			p.log.Warn("push rejected", "provider", prov.Name(), "status", r.Status, "reason", r.Reason, "token", Redact(t.N.Token))
		case Retry:
			retrying = true
			retry = max(retry, r.RetryAfter)
		}
	}
	switch {
	case retrying:
		p.m.jobs.WithLabelValues("retry").Inc()
		_ = msg.NakWithDelay(max(retry, backoff(tries)))
	case wait > 0:
		p.m.jobs.WithLabelValues("waiting").Inc()
		_ = msg.NakWithDelay(wait)
	default:
		p.m.jobs.WithLabelValues("done").Inc()
		_ = msg.Ack()
	}
}

// sentKey is the bucket key of (job, device): a hash, since user, device
// and conversation ids may hold characters keys cannot.
func sentKey(j Job, device string) string {
	h := sha256.Sum256([]byte(j.ID() + "\x00" + device))
	return hex.EncodeToString(h[:16])
}
