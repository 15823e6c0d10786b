//! Destination receipts kept in the context store, where `GET /v1/conversions/{id}`
//! reads them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable as _};

use crate::delivery::destination::{Receipt, ReceiptBook};
use crate::store::ContextStore;

/// Tries per receipt: a receipt is a record for people, not part of delivery, so a store
/// that stays down loses the receipt (logged) rather than holding the delivery lane.
const TRIES: usize = 3;

/// [`ReceiptBook`] over the context store.
pub struct StoredReceipts {
    store: Arc<dyn ContextStore>,
}

impl std::fmt::Debug for StoredReceipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredReceipts")
    }
}

impl StoredReceipts {
    /// Receipts kept in `store`.
    pub fn new(store: Arc<dyn ContextStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl ReceiptBook for StoredReceipts {
    async fn keep(&self, conversion_id: &str, receipt: &Receipt) {
        let body = match serde_json::to_string(receipt) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(conversion_id, %error, "cannot serialize a receipt");
                return;
            }
        };
        let keep = || async {
            self.store
                .outcomes()
                .keep_receipt(conversion_id, &receipt.destination, &body)
                .await
        };
        let retries = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_times(TRIES - 1);
        if let Err(error) = keep.retry(retries).await {
            tracing::warn!(conversion_id, destination = %receipt.destination, %error, "receipt not kept");
        }
    }
}
