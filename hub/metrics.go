package hub

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the hub's Prometheus collectors.
type Metrics struct {
	sessions         prometheus.Gauge
	sent             prometheus.Counter
	duplicates       prometheus.Counter
	seqConflicts     prometheus.Counter
	rerouted         prometheus.Counter
	republished      prometheus.Counter
	topicLastFetched prometheus.Counter
	busPanics        atomic.Int64 // bus handler panics recovered (also counted in busErrors); tests read it
	nodes            prometheus.Gauge
	nodesLost        prometheus.Counter
	presenceGaps     prometheus.Counter
	presenceIgnored  prometheus.Counter
	snapshots        prometheus.Counter
	delivered        prometheus.Counter
	syncs            prometheus.Counter
	receipts         *prometheus.CounterVec
	convOps          *prometheus.CounterVec
	topicSubs        prometheus.Gauge
	topicPublishes   prometheus.Counter
	topicEvents      prometheus.Counter
	topicCoalesced   prometheus.Counter
	busErrors        prometheus.Counter
	storageErrors    prometheus.Counter
	storageLatency   *prometheus.HistogramVec
	sendLatency      prometheus.Histogram
	deliveryLatency  prometheus.Histogram
}

// latencyBuckets spans 50 µs to 5 s.
var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics creates the hub's collectors and registers them with reg
// (nil: not registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_hub_sessions", Help: "Sessions registered with the hub on this node."}),
		sent:             prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_messages_sent_total", Help: "Messages durably stored and acked."}),
		duplicates:       prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_messages_duplicate_total", Help: "Sends answered from the idempotency index."}),
		nodes:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_cluster_nodes", Help: "Live nodes this node hears, itself included."}),
		nodesLost:        prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_cluster_nodes_lost_total", Help: "Nodes declared dead after missing heartbeats."}),
		presenceGaps:     prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_presence_gaps_total", Help: "Missed presence changes of a node, repaired by a snapshot."}),
		presenceIgnored:  prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_presence_ignored_total", Help: "Presence changes from nodes not considered alive."}),
		snapshots:        prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_presence_snapshots_total", Help: "Presence snapshots of a node applied."}),
		topicLastFetched: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_topic_last_fetched_total", Help: "Live-topic last values a first subscriber got from another node."}),
		rerouted:         prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_messages_rerouted_total", Help: "Retried sends whose stored message this node never saw routed, published again."}),
		republished:      prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_messages_republished_total", Help: "Message deliveries published again after a NATS reconnect."}),
		seqConflicts:     prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_seq_conflicts_total", Help: "Sends retried because another node took the conversation's next seq first."}),
		delivered:        prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_messages_delivered_total", Help: "Durable frames queued to local sessions."}),
		syncs:            prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_syncs_total", Help: "Sync (resume) requests answered."}),
		receipts:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_receipts_total", Help: "Receipts by kind."}, []string{"kind"}),
		convOps:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_conversation_ops_total", Help: "Conversation management operations."}, []string{"op"}),
		topicSubs:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_topic_subscriptions", Help: "Live-topic subscriptions of local sessions."}),
		topicPublishes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_topic_publishes_total", Help: "Live-topic publishes from this node."}),
		topicEvents:      prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_topic_events_total", Help: "Live-topic events fanned out on this node."}),
		topicCoalesced:   prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_topic_coalesced_total", Help: "Live-topic events skipped on this node because a newer one of the same topic was already waiting."}),
		busErrors:        prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_bus_errors_total", Help: "NATS publish failures and undecodable bus payloads."}),
		storageErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_storage_errors_total", Help: "Storage operations that failed."}),
		storageLatency:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "parley_storage_seconds", Help: "Storage latency by operation.", Buckets: latencyBuckets}, []string{"op"}),
		sendLatency:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_send_seconds", Help: "Send to durable ack, inside the hub.", Buckets: latencyBuckets}),
		deliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_delivery_seconds",
			Help: "From publish on the sending node to queueing on the recipient's node.", Buckets: latencyBuckets}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.sent, m.duplicates, m.seqConflicts, m.rerouted, m.republished, m.topicLastFetched, m.nodes, m.nodesLost, m.presenceGaps, m.presenceIgnored, m.snapshots, m.delivered, m.syncs, m.receipts, m.convOps,
			m.topicSubs, m.topicPublishes, m.topicEvents, m.topicCoalesced, m.busErrors, m.storageErrors,
			m.storageLatency, m.sendLatency, m.deliveryLatency)
	}
	return m
}
