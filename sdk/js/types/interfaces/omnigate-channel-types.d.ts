declare module 'omnigate:channel/types@0.2.0' {
  /**
   * Milliseconds since the Unix epoch, UTC.
   */
  export type Timestamp = bigint;
  /**
   * One HTTP header. Names compare case-insensitively; a header may repeat.
   */
  export interface Header {
    /**
     * Header name as received, e.g. `X-Hub-Signature-256`.
     */
    name: string,
    /**
     * Header value; non-UTF-8 bytes are replaced by U+FFFD.
     */
    value: string,
  }
  /**
   * A provider's webhook request, exactly as the host received it.
   */
  export interface HttpRequest {
    /**
     * HTTP method, upper case: `GET`, `POST`, …
     */
    method: string,
    /**
     * Path of the request, e.g. `/webhooks/wa-main`.
     */
    path: string,
    /**
     * Raw query string without the leading `?`, still percent-encoded; empty if none.
     */
    query: string,
    /**
     * All request headers in the order received.
     */
    headers: Array<Header>,
    /**
     * The raw body bytes; signatures are computed over these.
     */
    body: Uint8Array,
  }
  /**
   * The HTTP response the host gives the provider.
   */
  export interface HttpResponse {
    /**
     * Status code, e.g. 200.
     */
    status: number,
    /**
     * Response headers, e.g. `content-type`.
     */
    headers: Array<Header>,
    /**
     * Response body, e.g. Meta's `hub.challenge` echoed back.
     */
    body: Uint8Array,
  }
  /**
   * The kind of channel a plugin speaks.
   * # Variants
   * 
   * ## `"whatsapp"`
   * 
   * WhatsApp Business (Cloud API or a BSP).
   * ## `"messenger"`
   * 
   * Facebook Messenger.
   * ## `"instagram"`
   * 
   * Instagram messaging.
   * ## `"telegram"`
   * 
   * Telegram bots.
   * ## `"sms"`
   * 
   * SMS and MMS (Twilio, Vonage, …).
   * ## `"email"`
   * 
   * E-mail (inbound parse webhooks, outbound APIs).
   * ## `"slack"`
   * 
   * Slack apps.
   * ## `"webchat"`
   * 
   * A website's own chat widget.
   * ## `"other"`
   * 
   * Anything else.
   */
  export type ChannelKind = 'whatsapp' | 'messenger' | 'instagram' | 'telegram' | 'sms' | 'email' | 'slack' | 'webchat' | 'other';
  /**
   * What a channel can carry. The host uses this to refuse replies a channel cannot
   * express and to show operators what a plugin supports.
   * # Variants
   * 
   * ## `"text"`
   * 
   * Plain text messages.
   * ## `"media"`
   * 
   * Images, audio, video, documents, stickers.
   * ## `"location"`
   * 
   * Shared locations.
   * ## `"contacts"`
   * 
   * Shared contact cards.
   * ## `"reactions"`
   * 
   * Emoji reactions to a message.
   * ## `"edits"`
   * 
   * Edited messages.
   * ## `"deletes"`
   * 
   * Deleted (unsent) messages.
   * ## `"receipts"`
   * 
   * Delivery and read receipts.
   * ## `"interactive"`
   * 
   * Buttons, lists, quick replies and their replies.
   * ## `"templates"`
   * 
   * Pre-approved message templates (e.g. WhatsApp templates).
   * ## `"referrals"`
   * 
   * Referrals: ads, links and QR codes that started a conversation.
   * ## `"replies"`
   * 
   * Replies that quote an earlier message.
   */
  export type Capability = 'text' | 'media' | 'location' | 'contacts' | 'reactions' | 'edits' | 'deletes' | 'receipts' | 'interactive' | 'templates' | 'referrals' | 'replies';
  /**
   * A configuration key or secret name a plugin reads.
   */
  export interface Setting {
    /**
     * The key, e.g. `phone_number_id` or `app_secret`.
     */
    name: string,
    /**
     * What it is for, shown to operators by `omnigate plugin check`.
     */
    description: string,
    /**
     * Whether the channel cannot work without it.
     */
    required: boolean,
  }
  /**
   * What `describe` returns: who the plugin is and what it needs.
   */
  export interface PluginInfo {
    /**
     * Stable identifier, e.g. `whatsapp`; what `plugin = "…"` in the config names.
     */
    id: string,
    /**
     * Human name, e.g. `WhatsApp Cloud API`.
     */
    name: string,
    /**
     * The plugin's own version (semver).
     */
    version: string,
    /**
     * The channel kind it speaks.
     */
    kind: ChannelKind,
    /**
     * What it can carry.
     */
    capabilities: Array<Capability>,
    /**
     * Configuration keys it reads through `host.config`.
     */
    config: Array<Setting>,
    /**
     * Secret names it uses through `verify`, `sign` and `{{secret:NAME}}` placeholders.
     */
    secrets: Array<Setting>,
    /**
     * Hosts it needs to reach with `http-fetch` (the operator still has to allow them).
     */
    outboundHosts: Array<string>,
  }
  /**
   * The kind of a contact handle.
   * # Variants
   * 
   * ## `"phone"`
   * 
   * A phone number; the plugin gives it as the provider does, the host normalizes
   * it to E.164.
   * ## `"email"`
   * 
   * An e-mail address.
   * ## `"channel-user"`
   * 
   * A user id that only means something on this channel (PSID, chat id, visitor id).
   */
  export type HandleKind = 'phone' | 'email' | 'channel-user';
  /**
   * One way to reach a contact.
   */
  export interface Handle {
    /**
     * What kind of handle this is.
     */
    kind: HandleKind,
    /**
     * The value as the provider gave it.
     */
    value: string,
    /**
     * True when the provider vouches for it (WhatsApp's `wa_id` is a verified phone
     * number; an e-mail typed into a web form is not).
     */
    verified: boolean,
  }
  /**
   * The customer an event is about.
   */
  export interface Party {
    /**
     * The customer's id on this channel (`wa_id`, PSID, Telegram chat id, visitor id).
     * Replies go to this id.
     */
    id: string,
    /**
     * Display name, if the provider gives one.
     */
    name?: string,
    /**
     * Further handles the provider reveals (phone, e-mail).
     */
    handles: Array<Handle>,
  }
  /**
   * The kind of a media part.
   * # Variants
   * 
   * ## `"image"`
   * 
   * A picture.
   * ## `"video"`
   * 
   * A video.
   * ## `"audio"`
   * 
   * An audio file.
   * ## `"voice"`
   * 
   * A recorded voice note.
   * ## `"document"`
   * 
   * A document or any other file.
   * ## `"sticker"`
   * 
   * A sticker.
   */
  export type MediaKind = 'image' | 'video' | 'audio' | 'voice' | 'document' | 'sticker';
  /**
   * A media attachment: by provider id, by URL, or both.
   */
  export interface Media {
    /**
     * What kind of media it is.
     */
    kind: MediaKind,
    /**
     * The provider's media id (e.g. WhatsApp media id, Telegram `file_id`).
     */
    id?: string,
    /**
     * A URL where it can be fetched (may need the channel's credentials).
     */
    url?: string,
    /**
     * MIME type, e.g. `image/jpeg`.
     */
    mimeType?: string,
    /**
     * Caption sent with it.
     */
    caption?: string,
    /**
     * File name, for documents.
     */
    filename?: string,
    /**
     * Size in bytes, if known.
     */
    size?: bigint,
    /**
     * SHA-256 of the content as given by the provider, if any.
     */
    sha256?: string,
  }
  /**
   * A shared location.
   */
  export interface Location {
    /**
     * Latitude in degrees.
     */
    latitude: number,
    /**
     * Longitude in degrees.
     */
    longitude: number,
    /**
     * Name of the place.
     */
    name?: string,
    /**
     * Street address.
     */
    address?: string,
    /**
     * A link to the place.
     */
    url?: string,
  }
  /**
   * A shared contact card.
   */
  export interface ContactCard {
    /**
     * Formatted name.
     */
    name: string,
    /**
     * Phone numbers on the card.
     */
    phones: Array<string>,
    /**
     * E-mail addresses on the card.
     */
    emails: Array<string>,
    /**
     * The card's own user id on the channel, if the provider links it (e.g. `wa_id`).
     */
    userId?: string,
  }
  /**
   * A part of a message that the plugin did not understand. Never dropped: it
   * reaches downstream tools with the provider's own type name.
   */
  export interface Unsupported {
    /**
     * The provider's name for it, e.g. `ephemeral` or `unsupported`.
     */
    providerType: string,
    /**
     * Why it is not supported, for humans.
     */
    reason: string,
  }
  /**
   * One part of a message besides its text.
   */
  export type Part = PartMedia | PartLocation | PartContact | PartUnsupported;
  /**
   * Media, by id or URL.
   */
  export interface PartMedia {
    tag: 'media',
    val: Media,
  }
  /**
   * A location.
   */
  export interface PartLocation {
    tag: 'location',
    val: Location,
  }
  /**
   * A contact card.
   */
  export interface PartContact {
    tag: 'contact',
    val: ContactCard,
  }
  /**
   * Something the plugin could not map; the event's `raw` keeps the original.
   */
  export interface PartUnsupported {
    tag: 'unsupported',
    val: Unsupported,
  }
  /**
   * How the customer answered an interactive element.
   * # Variants
   * 
   * ## `"button"`
   * 
   * A reply button (WhatsApp interactive/button, Messenger/Instagram quick reply).
   * ## `"list"`
   * 
   * A row chosen from a list.
   * ## `"postback"`
   * 
   * A postback (Messenger/Instagram persistent menu or template button).
   * ## `"callback"`
   * 
   * A Telegram inline keyboard callback.
   */
  export type InteractiveKind = 'button' | 'list' | 'postback' | 'callback';
  /**
   * The customer's choice in an interactive element.
   */
  export interface InteractiveReply {
    /**
     * What kind of element was answered.
     */
    kind: InteractiveKind,
    /**
     * The id or payload the business gave the option.
     */
    id: string,
    /**
     * The option's title as the customer saw it.
     */
    title?: string,
  }
  /**
   * A named value, for click ids, UTM parameters and provider options.
   */
  export interface Pair {
    /**
     * The name, e.g. `fbclid` or `utm_source`.
     */
    name: string,
    /**
     * The value.
     */
    value: string,
  }
  /**
   * Where a referral came from.
   * # Variants
   * 
   * ## `"ad"`
   * 
   * A paid ad (click-to-WhatsApp, click-to-Messenger, Instagram ad).
   * ## `"post"`
   * 
   * An organic post.
   * ## `"link"`
   * 
   * A link: m.me, wa.me, t.me deep link, a website URL with UTM parameters.
   * ## `"qr"`
   * 
   * A QR code.
   * ## `"other"`
   * 
   * Anything else the provider reports.
   */
  export type ReferralSource = 'ad' | 'post' | 'link' | 'qr' | 'other';
  /**
   * What brought the customer: the ad, link or QR code behind a conversation.
   */
  export interface Referral {
    /**
     * Kind of source.
     */
    source: ReferralSource,
    /**
     * The ad id, if the source is an ad.
     */
    adId?: string,
    /**
     * Campaign name or id, if known.
     */
    campaign?: string,
    /**
     * Click ids by name: `ctwa_clid`, `fbclid`, `gclid`, `gbraid`, `wbraid`, `ttclid`,
     * `msclkid`, `li_fat_id`.
     */
    clickIds: Array<Pair>,
    /**
     * UTM parameters without the `utm_` prefix: `source`, `medium`, `campaign`, `term`,
     * `content`.
     */
    utm: Array<Pair>,
    /**
     * The landing or source URL.
     */
    url?: string,
    /**
     * The referring page, if known.
     */
    referrer?: string,
    /**
     * A ref payload: m.me `ref`, Telegram `/start` payload, a link token.
     */
    refPayload?: string,
    /**
     * The ad's headline.
     */
    headline?: string,
    /**
     * The ad's body text.
     */
    body?: string,
    /**
     * The ad's image or video URL.
     */
    mediaUrl?: string,
  }
  /**
   * Which way a message went.
   * # Variants
   * 
   * ## `"inbound"`
   * 
   * From the customer to the business.
   * ## `"outbound"`
   * 
   * From the business to the customer, sent outside omnigate (an echo).
   */
  export type Direction = 'inbound' | 'outbound';
  /**
   * A message.
   */
  export interface Message {
    /**
     * Who sent it.
     */
    direction: Direction,
    /**
     * Its text, if any (for media, the caption is on the part).
     */
    text?: string,
    /**
     * Media, location, contacts, unsupported parts.
     */
    parts: Array<Part>,
    /**
     * The provider id of the message this one replies to or quotes.
     */
    replyTo?: string,
    /**
     * Whether the customer forwarded it.
     */
    forwarded: boolean,
    /**
     * The customer's answer to a button, list or postback.
     */
    interactiveReply?: InteractiveReply,
    /**
     * The ad or link that led to this message, if the provider reports one.
     */
    referral?: Referral,
  }
  /**
   * Delivery state of a message sent to the customer.
   * # Variants
   * 
   * ## `"sent"`
   * 
   * Accepted by the provider.
   * ## `"delivered"`
   * 
   * Delivered to the customer's device.
   * ## `"read"`
   * 
   * Read by the customer.
   * ## `"failed"`
   * 
   * Could not be delivered.
   */
  export type DeliveryStatus = 'sent' | 'delivered' | 'read' | 'failed';
  /**
   * An error reported by the provider.
   */
  export interface ProviderError {
    /**
     * The provider's code, e.g. `131047`.
     */
    code: string,
    /**
     * Short title.
     */
    title: string,
    /**
     * Details, if any.
     */
    detail?: string,
  }
  /**
   * A delivery or read receipt.
   */
  export interface StatusUpdate {
    /**
     * Provider id of the message the status is about.
     */
    messageId: string,
    /**
     * The new status.
     */
    status: DeliveryStatus,
    /**
     * Why it failed, for `failed`.
     */
    error?: ProviderError,
  }
  /**
   * A reaction added or removed.
   */
  export interface Reaction {
    /**
     * Provider id of the message reacted to.
     */
    messageId: string,
    /**
     * The emoji; none when the reaction was removed.
     */
    emoji?: string,
  }
  /**
   * A message the customer edited.
   */
  export interface Edit {
    /**
     * Provider id of the edited message.
     */
    messageId: string,
    /**
     * The new text.
     */
    text?: string,
    /**
     * The new parts, if the provider sends them.
     */
    parts: Array<Part>,
  }
  /**
   * What happened.
   */
  export type EventBody = EventBodyMessage | EventBodyStatus | EventBodyReaction | EventBodyEdit | EventBodyDeletion | EventBodyReferral;
  /**
   * A message (inbound, or an outbound echo).
   */
  export interface EventBodyMessage {
    tag: 'message',
    val: Message,
  }
  /**
   * A delivery or read receipt.
   */
  export interface EventBodyStatus {
    tag: 'status',
    val: StatusUpdate,
  }
  /**
   * A reaction.
   */
  export interface EventBodyReaction {
    tag: 'reaction',
    val: Reaction,
  }
  /**
   * An edit.
   */
  export interface EventBodyEdit {
    tag: 'edit',
    val: Edit,
  }
  /**
   * A deletion (unsend); the payload is the provider id of the deleted message.
   */
  export interface EventBodyDeletion {
    tag: 'deletion',
    val: string,
  }
  /**
   * A referral that came without a message (Messenger referral, opt-in).
   */
  export interface EventBodyReferral {
    tag: 'referral',
    val: Referral,
  }
  /**
   * One normalized event produced from a webhook.
   */
  export interface InboundEvent {
    /**
     * The provider's unique id for this event on this channel; the host drops a
     * second event with the same id (dedupe). For a status, include the status
     * (e.g. `wamid.X:read`) so each transition counts once.
     */
    externalId: string,
    /**
     * When it happened according to the provider.
     */
    occurredAt?: Timestamp,
    /**
     * The business account it arrived on (phone number id, page id, bot id).
     */
    account?: string,
    /**
     * The customer the event is about.
     */
    contact: Party,
    /**
     * What happened.
     */
    body: EventBody,
    /**
     * The provider's JSON for this event, as text, when it is only part of the body
     * (batched webhooks). When none, the host keeps the whole body.
     */
    raw?: string,
  }
  /**
   * A successful webhook call: the response for the provider and the events found.
   * A handshake is a response with no events.
   */
  export interface WebhookOutcome {
    /**
     * What the provider gets back.
     */
    response: HttpResponse,
    /**
     * The events, in the provider's order.
     */
    events: Array<InboundEvent>,
  }
  /**
   * Why a webhook was refused.
   */
  export type WebhookError = WebhookErrorUnauthorized | WebhookErrorForbidden | WebhookErrorBadRequest;
  /**
   * Signature or secret missing or wrong (HTTP 401).
   */
  export interface WebhookErrorUnauthorized {
    tag: 'unauthorized',
    val: string,
  }
  /**
   * A handshake that must fail, e.g. a wrong verify token (HTTP 403).
   */
  export interface WebhookErrorForbidden {
    tag: 'forbidden',
    val: string,
  }
  /**
   * The request cannot be understood; the reason is returned to the caller (HTTP 400).
   */
  export interface WebhookErrorBadRequest {
    tag: 'bad-request',
    val: string,
  }
  /**
   * Interactive element kinds a reply can carry.
   * # Variants
   * 
   * ## `"buttons"`
   * 
   * Up to a few reply buttons.
   * ## `"list"`
   * 
   * A list of options.
   */
  export type InteractiveStyle = 'buttons' | 'list';
  /**
   * One option of an interactive reply.
   */
  export interface Choice {
    /**
     * The id returned when the customer picks it.
     */
    id: string,
    /**
     * What the customer sees.
     */
    title: string,
    /**
     * Extra line under the title (lists).
     */
    description?: string,
  }
  /**
   * Buttons or a list attached to a reply.
   */
  export interface Interactive {
    /**
     * Buttons or list.
     */
    style: InteractiveStyle,
    /**
     * Text shown with the element.
     */
    body: string,
    /**
     * The list's button label (lists only).
     */
    actionLabel?: string,
    /**
     * The options.
     */
    choices: Array<Choice>,
  }
  /**
   * A pre-approved template (WhatsApp) or equivalent.
   */
  export interface Template {
    /**
     * Template name.
     */
    name: string,
    /**
     * Language code, e.g. `es` or `en_US`.
     */
    language: string,
    /**
     * Components as the provider's JSON, as text (header, body parameters, buttons).
     */
    components?: string,
  }
  /**
   * A reply to deliver to the customer.
   */
  export interface OutboundMessage {
    /**
     * The host's id for this message; plugins may pass it on as an idempotency key.
     */
    id: string,
    /**
     * The customer's id on this channel (the `party.id` of their events).
     */
    recipient: string,
    /**
     * The omnigate conversation id, for plugins that thread by it.
     */
    conversationId: string,
    /**
     * Text of the reply.
     */
    text?: string,
    /**
     * Media, location or contact parts.
     */
    parts: Array<Part>,
    /**
     * Provider id of the message to quote or thread under.
     */
    replyTo?: string,
    /**
     * Buttons or a list.
     */
    interactive?: Interactive,
    /**
     * A template instead of free text.
     */
    template?: Template,
    /**
     * A reaction to an earlier message instead of a message.
     */
    reaction?: Reaction,
    /**
     * Provider-specific options, e.g. Messenger `messaging_type` and `tag`.
     */
    options: Array<Pair>,
  }
  /**
   * What the provider said when it accepted a reply.
   */
  export interface SendReceipt {
    /**
     * The provider's id for the sent message.
     */
    externalId: string,
    /**
     * The provider's response JSON as text, if useful downstream.
     */
    raw?: string,
  }
  /**
   * Why a reply was not delivered.
   */
  export type SendError = SendErrorRateLimited | SendErrorRejected | SendErrorUnauthorized | SendErrorTransient | SendErrorInvalid;
  /**
   * The provider throttled us; try again after this many seconds, if it said.
   */
  export interface SendErrorRateLimited {
    tag: 'rate-limited',
    val: number | undefined,
  }
  /**
   * The provider refused this message for good (e.g. outside the reply window);
   * retrying will not help.
   */
  export interface SendErrorRejected {
    tag: 'rejected',
    val: ProviderError,
  }
  /**
   * Credentials are wrong or expired.
   */
  export interface SendErrorUnauthorized {
    tag: 'unauthorized',
    val: string,
  }
  /**
   * A temporary failure (5xx, timeout); retrying may help.
   */
  export interface SendErrorTransient {
    tag: 'transient',
    val: string,
  }
  /**
   * The message cannot be expressed on this channel (missing capability, bad
   * recipient, missing configuration).
   */
  export interface SendErrorInvalid {
    tag: 'invalid',
    val: string,
  }
}
