package natsbench

import (
	"strings"
	"testing"
)

// samplePayload is a ~200-byte conversation message as it travels on the
// broadcast subject: a small header and a JSON frame. Its content does not
// matter to NATS, only its size; what a gateway pays to decode one is
// measured on the real decoder by hub's BenchmarkForeignMessage.
func samplePayload() []byte {
	head := strings.Repeat("h", 48) // kind, origin, flags, conversation, exclusions, timestamp, seq
	frame := `{"type":"message","conv":"dm:01JD6Z4M2Q8W5V3N9K7T1R0XYZ","seq":1042,"from":"user-000000000042",` +
		`"cmid":"01JD6Z5A0B1C2D3E4F5G6H7J8K","body":"on my way, 5 min` + strings.Repeat(".", 12) + `"}`
	return []byte(head + frame)
}

func TestSamplePayloadSize(t *testing.T) {
	if n := len(samplePayload()); n < 180 || n > 240 {
		t.Fatalf("sample payload is %d bytes, want about 200", n)
	}
}
