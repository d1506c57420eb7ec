//! Every answer's `date` header, sent so that HTTP/2 never indexes it.
//!
//! hyper adds a `date` to every response, and h2 adds each new value to
//! its connection's header table (HPACK), which never shrinks: a node
//! calling every ten seconds filled its connection's table with 64 dates
//! and their index within ten minutes, about 9 KiB of the controller per
//! node, for as long as it stays connected. A date marked sensitive goes
//! out as a literal that is never indexed (29 bytes a response), and
//! hyper keeps a `date` the service already set.

use std::time::SystemTime;

use http::Response;
use http::header::{DATE, HeaderValue};
use tonic::body::Body;
use tower::util::MapResponseLayer;

/// The layer that dates every answer.
pub fn layer() -> MapResponseLayer<fn(Response<Body>) -> Response<Body>> {
    MapResponseLayer::new(dated)
}

fn dated(mut response: Response<Body>) -> Response<Body> {
    // An HTTP date is always a valid header value; without one hyper
    // still adds its own.
    if let Ok(mut date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        date.set_sensitive(true);
        response.headers_mut().insert(DATE, date);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_carries_a_current_date_never_to_be_indexed() {
        let response = dated(Response::new(Body::empty()));
        let date = response.headers().get(DATE).expect("a date");
        assert!(date.is_sensitive());
        let sent = httpdate::parse_http_date(date.to_str().expect("ascii")).expect("an HTTP date");
        let age = SystemTime::now()
            .duration_since(sent)
            .expect("not in the future");
        assert!(age.as_secs() < 5, "{age:?}");
    }
}
