// Package push will own offline delivery: device push tokens, a durable
// push queue, and the APNs (sideshow/apns2) and FCM HTTP v1 senders that wake
// devices without a live session. It is built in its own issue; until then
// the delivery contract's "an offline device also gets a push" is not met,
// and offline devices catch up by sync when they reconnect.
//
// It must not know about sockets; it consumes delivery events from the hub.
package push
