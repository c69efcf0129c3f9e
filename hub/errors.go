package hub

import (
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/protocol"
)

func errInvalid(format string, args ...any) error {
	return protocol.Errorf(protocol.CodeInvalid, format, args...)
}
func errForbidden(format string, args ...any) error {
	return protocol.Errorf(protocol.CodeForbidden, format, args...)
}
func errNotMember(conv string) error {
	return protocol.Errorf(protocol.CodeNotMember, "not a member of %s", conv)
}
func errNotFound(conv string) error {
	return protocol.Errorf(protocol.CodeNotFound, "no conversation %s", conv)
}
func errUnavailable(msg string) error {
	return &protocol.Error{Code: protocol.CodeUnavailable, Message: msg}
}

// validID reports whether s is a valid user or device id, by the rule the
// whole server shares (auth.ValidID); conversation ids of 1:1 chats are built
// from user ids with ':', which ids never hold.
func validID(s string) bool { return auth.ValidID(s) == nil }

// validConvID accepts the ids this server generates and any 1..128 byte
// printable id without whitespace.
func validConvID(s string) bool {
	if len(s) == 0 || len(s) > protocol.MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
