// Package apns sends push notifications to Apple devices through APNs's
// HTTP/2 provider API, using github.com/sideshow/apns2.
//
// A Sender holds one long-lived HTTP/2 client per app (bundle id, the
// notification's Topic) and environment (production, sandbox), created once
// in New: Apple treats rapid connect/disconnect as an attack, so connections
// are reused for the life of the process. Each app has its own credentials:
// a token-signing key (.p8, preferred) or a client certificate (PEM pair or
// .p12).
//
// What a push looks like on the wire (see buildRequest):
//
//   - apns-push-type "alert" when the device shows something (a title, a
//     body, the hidden-text loc-key or a badge); "background" only when there
//     is nothing to show, and then with content-available and apns-priority 5
//     (Apple refuses priority 10 for background pushes).
//   - apns-priority 10 for push.High, 5 for push.Low.
//   - apns-collapse-id and aps.thread-id: the notification's CollapseID when
//     it fits Apple's 64 bytes, else the hex SHA-256 of it (64 bytes, the
//     same for every push of the conversation).
//   - apns-id: a name-based (version 5) UUID of the notification's ID, so a
//     retry of the same push carries the same apns-id.
//   - apns-expiration when Expiration is set.
//   - payload {"aps":{"alert":{"title","body"},"badge","sound":"default",
//     "mutable-content":1,"thread-id"}, <Data keys>...}. When the body is
//     hidden (empty) the alert carries the title only, plus the app's
//     generic loc-key if Config.HiddenBodyLocKey is set.
//
// Apple's answers map to push.Outcome as Apple documents them (see
// classify): 200 Sent; 410 and 400 BadDeviceToken/DeviceTokenNotForTopic
// InvalidToken; 429, 5xx, 400 IdleTimeout and 403 ExpiredProviderToken
// Retry (with Retry-After when Apple sends one); every other refusal
// Rejected; network errors and an expired ctx Retry.
//
// The package must not queue or retry (the push queue does), and must never
// log a device token in full (push.Redact) or a notification's text.
package apns
