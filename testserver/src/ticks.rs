//! The paced streams the HTTP (`/sse`) and gRPC (`Stream`) endpoints send: numbers `0..count`, `interval` apart.

use std::time::Duration;

use futures::Stream;

/// Yields `0`, `1`, ... `count - 1`, the first at once and each next one `interval` after the previous one.
pub(crate) fn ticks(count: u64, interval: Duration) -> impl Stream<Item = u64> + Send {
    futures::stream::unfold(0u64, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        Some((i, i + 1))
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn counts_and_paces() {
        let start = tokio::time::Instant::now();
        let got: Vec<u64> = ticks(3, Duration::from_millis(20)).collect().await;
        assert_eq!(got, [0, 1, 2]);
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(ticks(0, Duration::ZERO).count().await, 0);
    }
}
