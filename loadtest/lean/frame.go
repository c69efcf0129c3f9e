//go:build linux

package lean

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Websocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close codes this package sends or reports.
const (
	closeNormal    = 1000
	closeProtocol  = 1002
	closeNoStatus  = 1005 // a close frame without a code
	closeTooLarge  = 1009
	maxControlSize = 125
)

// header is a parsed websocket frame header.
type header struct {
	fin   bool
	op    byte
	hlen  int // header bytes
	total int // header and payload bytes
}

// parseHeader parses the frame header at the start of b, a server frame
// (unmasked) whose payload may be at most max bytes. It returns ok false if
// b does not hold the whole header yet. It never reads past b and never
// panics, whatever b holds; the payload is b[h.hlen:h.total] once
// len(b) >= h.total.
func parseHeader(b []byte, max int) (h header, ok bool, err error) {
	if len(b) < 2 {
		return header{}, false, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	h.op = b0 & 0x0F
	if b0&0x70 != 0 {
		return header{}, false, fmt.Errorf("%w: reserved bits set (no extension was negotiated)", ErrProtocol)
	}
	if b1&0x80 != 0 {
		return header{}, false, fmt.Errorf("%w: masked frame from the server", ErrProtocol)
	}
	n := uint64(b1 & 0x7F)
	h.hlen = 2
	switch n {
	case 126:
		if len(b) < 4 {
			return header{}, false, nil
		}
		n, h.hlen = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return header{}, false, nil
		}
		n, h.hlen = binary.BigEndian.Uint64(b[2:10]), 10
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || n > maxControlSize {
			return header{}, false, fmt.Errorf("%w: fragmented or oversize control frame", ErrProtocol)
		}
	default:
		return header{}, false, fmt.Errorf("%w: reserved opcode %#x", ErrProtocol, h.op)
	}
	if n > uint64(max) {
		return header{}, false, fmt.Errorf("%w: %d-byte frame", ErrTooLarge, n)
	}
	h.total = h.hlen + int(n)
	return h, true, nil
}

// appendFrame appends a masked client frame (FIN set) carrying payload.
func appendFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	n := len(payload)
	switch {
	case n <= maxControlSize:
		dst = append(dst, 0x80|op, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|op, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], mask)
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range dst[start:] {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// frameType returns the type of a Parley frame (one JSON object) if it is
// the object's first member, as the server writes every frame
// (`{"type":"ping"}`, `{"type":"hello",...}`); nil otherwise. It looks at
// the first bytes only: frames can be large and the payload is discarded.
func frameType(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	const prefix = `{"type":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return nil
	}
	b = b[len(prefix):]
	i := bytes.IndexByte(b[:min(len(b), 32)], '"')
	if i < 0 {
		return nil
	}
	return b[:i]
}

// wsGUID is appended to the key to compute Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptLen is the length of a base64 SHA-1 digest.
const acceptLen = 28

// acceptFor returns the Sec-WebSocket-Accept value for key.
func acceptFor(key string) (out [acceptLen]byte) {
	h := sha1.Sum([]byte(key + wsGUID))
	base64.StdEncoding.Encode(out[:], h[:])
	return out
}

// errBadResponse is wrapped by checkResponse's errors.
var errBadResponse = fmt.Errorf("%w: bad upgrade response", ErrProtocol)

// checkResponse parses the HTTP response head (through the blank line) to
// an upgrade request. For a 101 it checks the websocket headers against
// accept and the subprotocol; for any other status it returns the status
// without an error.
func checkResponse(head []byte, accept []byte, subprotocol string) (status int, err error) {
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < 12 || line[8] != ' ' {
		return 0, fmt.Errorf("%w: status line %.40q", errBadResponse, line)
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, fmt.Errorf("%w: status line %.40q", errBadResponse, line)
	}
	status, perr := strconv.Atoi(string(line[9:12]))
	if perr != nil || status < 100 {
		return 0, fmt.Errorf("%w: status line %.40q", errBadResponse, line)
	}
	if status != 101 {
		return status, nil
	}
	var upgrade, connection, acceptOK, protoOK bool
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue // the final blank line
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(value, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				if bytes.EqualFold(bytes.TrimSpace(tok), []byte("upgrade")) {
					connection = true
				}
			}
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			acceptOK = bytes.Equal(value, accept)
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			protoOK = string(value) == subprotocol
		}
	}
	switch {
	case !upgrade || !connection:
		return status, fmt.Errorf("%w: missing Upgrade/Connection headers", errBadResponse)
	case !acceptOK:
		return status, fmt.Errorf("%w: wrong Sec-WebSocket-Accept", errBadResponse)
	case !protoOK:
		return status, fmt.Errorf("%w: server did not choose subprotocol %s", errBadResponse, subprotocol)
	}
	return status, nil
}

// closeCode returns the code of a close frame's payload.
func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return closeNoStatus
	}
	return int(binary.BigEndian.Uint16(payload))
}
