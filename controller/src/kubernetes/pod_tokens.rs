//! Reviewing the pod token a fetch request carries, for
//! [`crate::admission::pod_token`] to decide on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kcred_auth::BearerToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::token_review::{REVIEW_TIMEOUT, ReviewError, TokenReviewer};
use crate::admission::TokenVerdict;
use crate::locks::lock;

/// Most reviews one node may have in flight: a node cannot turn one call
/// (a `FetchBundles` of 256 volumes, each with a token of its own) into
/// as many `TokenReview`s at the API server at once. A token whose review
/// is cached waits for no turn; one that waits longer than a review may
/// take is unverifiable, as if the API server had not answered (renewals
/// of volumes issued before go on, as they do in an outage).
pub const REVIEWS_PER_NODE: usize = 4;

/// Pod tokens are required (`kubernetes.require_pod_token`): how to
/// review them.
pub struct PodTokens {
    reviewer: Arc<TokenReviewer>,
    audience: String,
    in_flight: PerNode,
}

impl PodTokens {
    /// Reviews with `reviewer` for `audience`.
    pub fn new(reviewer: Arc<TokenReviewer>, audience: String) -> Self {
        PodTokens {
            reviewer,
            audience,
            in_flight: PerNode::new(REVIEWS_PER_NODE),
        }
    }

    /// What the API server says of the token `node` sent with a request
    /// (`raw`: as it came in, empty when none did).
    pub async fn verdict(&self, node: &str, raw: &str) -> TokenVerdict {
        if raw.is_empty() {
            return TokenVerdict::Missing;
        }
        let token = match BearerToken::new(raw) {
            Ok(t) => t,
            Err(e) => return TokenVerdict::Rejected(e.to_string()),
        };
        if let Some(id) = self.reviewer.cached(&token, &self.audience) {
            return TokenVerdict::Reviewed(id);
        }
        let wait = tokio::time::timeout(REVIEW_TIMEOUT, self.in_flight.acquire(node));
        let Ok(_turn) = wait.await else {
            return TokenVerdict::Unverifiable(format!(
                "the node's pod-token reviews wait behind {REVIEWS_PER_NODE} the API server has not answered in {} s",
                REVIEW_TIMEOUT.as_secs()
            ));
        };
        match self.reviewer.review(&token, &self.audience).await {
            Ok(id) => TokenVerdict::Reviewed(id),
            Err(ReviewError::Rejected(m)) => TokenVerdict::Rejected(m),
            Err(ReviewError::Unavailable(m)) => TokenVerdict::Unverifiable(m),
        }
    }
}

/// A bounded number of turns per node, kept only while a node holds one.
struct PerNode {
    turns: usize,
    nodes: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// One node's turn; the node's entry goes once its last turn ends.
struct Turn {
    node: String,
    nodes: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl PerNode {
    fn new(turns: usize) -> Self {
        PerNode {
            turns,
            nodes: Arc::default(),
        }
    }

    /// Waits for one of `node`'s turns.
    async fn acquire(&self, node: &str) -> Turn {
        let semaphore = Arc::clone(
            lock(&self.nodes)
                .entry(node.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.turns))),
        );
        // Never closed: the semaphore lives as long as someone holds it.
        let permit = semaphore.acquire_owned().await.ok();
        Turn {
            node: node.to_string(),
            nodes: Arc::clone(&self.nodes),
            permit,
        }
    }

    #[cfg(test)]
    fn nodes_held(&self) -> usize {
        lock(&self.nodes).len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut nodes = lock(&self.nodes);
        drop(self.permit.take());
        // Only the map holds it, and no one waits: nothing to keep.
        if nodes
            .get(&self.node)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            nodes.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PerNode;

    #[tokio::test]
    async fn a_node_waits_for_a_turn_another_node_does_not_and_idle_nodes_are_forgotten() {
        let limit = PerNode::new(2);
        let first = limit.acquire("node-a").await;
        let second = limit.acquire("node-a").await;
        let third = tokio::time::timeout(Duration::from_millis(50), limit.acquire("node-a")).await;
        assert!(third.is_err(), "a third turn waits");
        let other = tokio::time::timeout(Duration::from_millis(50), limit.acquire("node-b")).await;
        assert!(other.is_ok(), "another node does not");
        drop(other);
        assert_eq!(limit.nodes_held(), 1, "node-b forgotten");
        let waiting = tokio::spawn({
            let limit = std::sync::Arc::new(limit);
            let l = std::sync::Arc::clone(&limit);
            async move {
                let turn = l.acquire("node-a").await;
                drop(turn);
                limit
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let limit = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting turn came")
            .expect("task");
        assert_eq!(limit.nodes_held(), 1, "node-a still holds a turn");
        drop(second);
        assert_eq!(limit.nodes_held(), 0);
    }
}
