"""The tables. Changes here need a migration in store/migrations/versions/."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The IANA zone of the account's day / week / month windows (NULL: UTC).
    Column("timezone", String(64), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(20), nullable=False),
    # SHA-256 of the secret, hex. The secret itself is never stored.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("secret_hint", String(16), nullable=False),
    Column("max_spend_micros", BigInteger, nullable=True),
    Column("end_user_id", String(200), nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # Key policy (tollway.policy): [{"period", "max_spend_micros"}] windows besides the total cap,
    # {"rpm", "tpm", "max_parallel"}, {model or glob: the same}, [names or globs], [tags].
    Column("limits", JSON, nullable=True),
    Column("rate_limits", JSON, nullable=True),
    Column("model_limits", JSON, nullable=True),
    Column("allowed_models", JSON, nullable=True),
    Column("tags", JSON, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    # Rotation: the previous secret keeps working until previous_secret_until.
    Column("previous_secret_hash", String(64), nullable=True),
    Column("previous_secret_until", BigInteger, nullable=True),
    Index("ix_api_keys_previous_secret", "previous_secret_hash"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # One per model call (several calls of a request share its request_id); NULL on rows
    # from before migration 0004. Unique: replaying the crash journal is idempotent.
    Column("event_id", String(40), nullable=True),
    Column("request_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("provider", String(100), nullable=False),
    Column("http_status", Integer, nullable=False),
    # ok | client_closed | client_stalled | upstream_error | timeout | error | interrupted (in flight at a crash)
    Column("outcome", String(20), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # When the call took its hold: the spend windows it is charged to (NULL only before 0006).
    Column("started_at", BigInteger, nullable=True),
    Index("ix_usage_account_time", "account_id", "created_at"),
    Index("ix_usage_key_started", "key_id", "started_at"),
    Index("ix_usage_key_time", "key_id", "created_at"),
    Index("ux_usage_event_id", "event_id", unique=True),
)


# Usage rollups (tollway.ledger.rollups): the sums of usage_events per account, UTC hour
# (span_ms 3600000), day and month in the account's zone (86400000, 2592000000), key and model,
# written in the transaction that inserts the events. End user and tag are the key's, looked up
# at report time (as for events).
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("span_ms", BigInteger, primary_key=True, autoincrement=False),  # rollups.HOUR, DAY or MONTH
    Column("bucket_ms", BigInteger, primary_key=True, autoincrement=False),  # local_days: the hour's, day's, month's
    Column("key_id", String(40), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("request_count", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("latency_ms", BigInteger, nullable=False),  # the sum (the reports show the average)
)

# Credit granted to a key: raises its total limit (period "total") or one window's.
key_credits = Table(
    "key_credits",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("period", String(10), nullable=False),  # total | day | week | month
    Column("window_start", BigInteger, nullable=True),  # the window credited (NULL for total)
    Column("granted_by", String(40), nullable=False),  # the admin key that granted it
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("account_id", "idempotency_key", name="uq_key_credits_idempotency"),
    Index("ix_key_credits_key", "key_id", "created_at"),
)


# The prepaid wallet (tollway.wallet): an account's balance is the sum of its entries.
# ``wallets.balance_micros`` is that sum kept in the same transactions (``tollway wallet
# verify`` checks the two agree, and that every priced usage event has its one debit).
wallets = Table(
    "wallets",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("balance_micros", BigInteger, nullable=False),
    # {"threshold_micros", "recharge_to_micros", "monthly_max_micros"} or NULL (off)
    Column("auto_recharge", JSON, nullable=True),
    Column("stripe_customer_id", String(255), nullable=True),
    Column("payment_method_id", String(255), nullable=True),
    Column("recharge_failures", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

wallet_entries = Table(
    "wallet_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("account_id", String(40), nullable=False),
    Column("kind", String(20), nullable=False),  # topup | debit | refund | adjustment
    Column("amount_micros", BigInteger, nullable=False),  # signed: debits and refunds < 0
    Column("cause", String(500), nullable=False),
    Column("key_id", String(40), nullable=True),  # a debit's key; an adjustment's admin key
    Column("usage_event_id", String(40), nullable=True),  # a debit's usage event
    Column("stripe_object_id", String(255), nullable=True),  # a top-up's session / intent, a refund's charge
    Column("stripe_event_id", String(255), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_wallet_entries_account", "account_id", "id"),
    Index("ux_wallet_entries_event", "usage_event_id", unique=True),
    Index("ux_wallet_entries_stripe_event", "stripe_event_id", unique=True),
    UniqueConstraint("account_id", "idempotency_key", name="uq_wallet_entries_idempotency"),
)

# Usage exported to Stripe (tollway.billing): how far the meter-event export got (the last
# usage_events.id sent), and the InvoiceItem made for a key and period (one per pair).
billing_cursors = Table(
    "billing_cursors",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("last_usage_id", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

billing_invoice_items = Table(
    "billing_invoice_items",
    metadata,
    Column("key_id", String(40), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("period_end", BigInteger, nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("invoice_item_id", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("key_id", "period_start", "period_end", name="uq_billing_invoice_items_period"),
)

# Threads: one end user's conversation, held server-side. Erasing a thread
# (tollway.threads.store.ThreadStore.delete_thread) removes both tables' rows.
threads = Table(
    "threads",
    metadata,
    # Insertion order: the cursor for listing (newest first) without OFFSET.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("end_user_id", String(200), nullable=True),
    # The key that created the thread.
    Column("key_id", String(40), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("system", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # One writer at a time (a running turn), across processes: see ThreadStore.acquire_lease.
    Column("lease_token", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Index("ix_threads_account_seq", "account_id", "seq"),
    Index("ix_threads_account_end_user_seq", "account_id", "end_user_id", "seq"),
)

thread_messages = Table(
    "thread_messages",
    metadata,
    # Chronological order within a thread: every cursor query is on (thread_id, seq).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("thread_id", String(40), ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    # user | assistant
    Column("role", String(20), nullable=False),
    # A list of Anthropic-style content blocks (text, image, tool_use, tool_result).
    Column("content", JSON, nullable=False),
    Column("model", String(200), nullable=True),
    Column("usage", JSON, nullable=True),
    Column("stop_reason", String(40), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_thread_messages_thread_seq", "thread_id", "seq"),
)


# Webhook tools: an app registers a tool once; when a model calls it, the gateway
# POSTs the call to ``webhook_url``, signed with ``signing_secret`` (tollway.webhooks).
tools = Table(
    "tools",
    metadata,
    # Insertion order: the cursor for listing (oldest first) without OFFSET.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    # ^[a-zA-Z0-9_-]{1,64}$, unique per account.
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False),
    # A JSON Schema object ({"type": "object", ...}).
    Column("input_schema", JSON, nullable=False),
    Column("webhook_url", Text, nullable=False),
    Column("timeout_ms", Integer, nullable=False),
    # The HMAC key for the webhook signatures, kept in clear: the gateway signs with it.
    # Not an API key (it grants nothing here); never logged, shown only on create/rotate.
    Column("signing_secret", String(100), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("account_id", "name", name="uq_tools_account_name"),
    Index("ix_tools_account_seq", "account_id", "seq"),
)


# Search (tollway.search): what the indexer has still to do, and what it made of it.
# Storing a message enqueues it in the same transaction (the message_stored hook); the
# indexer turns it into chunks (text + scope), lexical entries and vectors, and
# deletes the queue row in the transaction that writes them.
search_queue = Table(
    "search_queue",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("message_seq", BigInteger, ForeignKey("thread_messages.seq", ondelete="CASCADE"), nullable=False),
    Column("thread_id", String(40), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
)

search_chunks = Table(
    "search_chunks",
    metadata,
    # message seq x 1024 + the chunk's ordinal: the same message always gives the same
    # ids, so an indexing pass repeated after a crash overwrites instead of adding.
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", String(40), nullable=False),
    Column("thread_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    # "u:<end user>" for an end user's thread, else "k:<key id>" (the key that created it).
    Column("scope", String(210), nullable=False),
    Column("role", String(20), nullable=False),  # user | assistant | tool
    Column("model", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    # The scope's and the account's tokens (tollway.search.text.scope_tokens): indexed with the words.
    Column("tokens", String(80), nullable=False),
    Index("ix_search_chunks_scope_time", "account_id", "scope", "created_at"),
    Index("ix_search_chunks_account_time", "account_id", "created_at"),
    Index("ix_search_chunks_thread", "thread_id"),
)

# One row per index generation ("space"): which embedder and dimension built it, on which
# vector backend. One is active (queries); a rebuild is "building" until it has caught up.
search_spaces = Table(
    "search_spaces",
    metadata,
    Column("space", String(20), primary_key=True),
    Column("embedder", String(300), nullable=False),
    Column("dim", Integer, nullable=False),
    Column("backend", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # active | building | retired
    # building: every chunk with an id up to this one is in the space
    Column("built_upto", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger, nullable=True),
)


# Account events (tollway.events): endpoints an account registers, the outbox of events
# (written in the transaction of the change that caused them), one delivery per event
# and subscribed endpoint, and every attempt at it.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("events", JSON, nullable=False),  # event types, or ["*"]
    Column("disabled", Boolean, nullable=False, default=False),
    Column("disabled_reason", String(300), nullable=True),
    # The HMAC key of the Standard Webhooks signatures, kept in clear like the tools' (the
    # gateway signs with it); the previous one also signs until previous_secret_until.
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_secret_until", BigInteger, nullable=True),
    Column("failing_since", BigInteger, nullable=True),  # the first failure since the last success
    # The sender's lease on the endpoint (one gateway process delivers to it at a time).
    Column("claimed_until", BigInteger, nullable=True),
    Column("claimed_by", String(40), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_webhook_endpoints_account", "account_id", "seq"),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),  # msg_...: the webhook-id
    Column("account_id", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the JSON sent, exactly: {"type", "timestamp", "data"}
    # At most one event per dedup key ("once per window"): a second emit is a no-op.
    Column("dedup_key", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ux_events_dedup", "dedup_key", unique=True),
    Index("ix_events_account", "account_id", "seq"),
)

event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("endpoint_id", String(40), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # pending | succeeded | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=True),  # pending only
    Column("last_status", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("endpoint_id", "event_id", name="uq_event_deliveries_endpoint_event"),
    Index("ix_event_deliveries_due", "state", "next_attempt_at"),
    Index("ix_event_deliveries_endpoint", "endpoint_id", "seq"),
)

event_attempts = Table(
    "event_attempts",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False),
    Column("n", Integer, nullable=False),
    Column("status", Integer, nullable=True),  # the HTTP status, None when no answer came
    Column("error", String(500), nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=True),  # when the next was scheduled (None: final)
    Index("ix_event_attempts_delivery", "delivery_id", "seq"),
)


# Jobs (tollway.jobs): a model call or thread turn run in the background, durably.
# Workers claim a row with a lease (claimed_by, lease_until, heartbeat); a lapsed lease
# is taken over. The terminal status, result / error and the turn marker are each
# written by one conditional UPDATE (see tollway.jobs.store).
jobs = Table(
    "jobs",
    metadata,
    # Insertion order: the cursor for listing (newest first) and the claim order.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("endpoint", String(80), nullable=False),  # /v1/chat/completions | /v1/messages | /v1/responses | a turn
    Column("thread_id", String(40), nullable=True),
    Column("body", JSON, nullable=False),
    # queued | running | succeeded | failed | cancelled | expired
    Column("status", String(12), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("webhook_url", String(2048), nullable=True),
    # The result delivered to webhook_url: signed with webhook_secret (tollway.webhooks), on a
    # schedule of attempts kept here (tollway.jobs.delivery).
    Column("webhook_secret", String(80), nullable=True),
    Column("webhook_attempts", Integer, nullable=False, server_default="0"),
    Column("webhook_next_at", BigInteger, nullable=True),
    Column("webhook_delivered_at", BigInteger, nullable=True),
    Column("webhook_status", Integer, nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("hold_micros", BigInteger, nullable=False),  # held from submission until the job's call takes it over
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("request_id", String(64), nullable=True),  # the attempt whose result was recorded
    Column("status_code", Integer, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    # A thread job's turn: the attempt that stored it and its reply (stored once).
    Column("turn_attempt", Integer, nullable=True),
    Column("turn_message_id", String(40), nullable=True),
    # Native batch APIs will run each of their lines as a job.
    Column("batch_id", String(40), nullable=True),
    Column("custom_id", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_idempotency"),
    Index("ix_jobs_status_seq", "status", "seq"),
    Index("ix_jobs_account_seq", "account_id", "seq"),
    Index("ix_jobs_batch", "batch_id"),
    Index("ix_jobs_webhook_next", "webhook_next_at"),
)


# Uploaded files (POST /v1/files, purpose "batch": a batch's JSONL input) and the output and
# error files of the OpenAI-shaped batches (purpose "batch_output"; no content stored: it is
# built from the batch's jobs when read). tollway.batches.
files = Table(
    "files",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("purpose", String(20), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=True),
    Column("batch_id", String(40), nullable=True),  # an output file: the batch it is built from
    Column("kind", String(8), nullable=True),  # an output file: "output" | "error"
    Column("created_at", BigInteger, nullable=False),
    Index("ix_files_account_seq", "account_id", "seq"),
)

# Native batch APIs (Anthropic Message Batches, OpenAI Batch): each line is a job
# (jobs.batch_id); a batch's status and counts come from its jobs, its end is recorded once
# (ended_at, and the final counts) when its last job ended. tollway.batches.
batches = Table(
    "batches",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("kind", String(12), nullable=False),  # anthropic | openai
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("endpoint", String(80), nullable=False),
    Column("input_file_id", String(40), nullable=True),
    Column("completion_window", String(8), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("total", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("cancel_initiated_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("counts", JSON, nullable=True),  # the jobs' statuses counted when the batch ended
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Index("ix_batches_account_seq", "account_id", "seq"),
    Index("ix_batches_open", "ended_at"),
)
