// Package push owns offline delivery: the notifications that wake devices
// without a live session, the provider senders (APNs in push/apns, FCM HTTP
// v1 in push/fcm), and the durable queue between the delivery path and them.
//
// This file set defines what every part shares: a Notification (one push to
// one device), the Provider interface the senders implement, and the Result
// a provider answer maps to — which decides whether a token is dropped, a
// push retried (with the provider's Retry-After) or given up.
//
// The package must not know about sockets or the wire protocol, and must
// never log a device token in full (Redact) or a message's text.
package push
