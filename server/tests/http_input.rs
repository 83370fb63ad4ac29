//! Bad HTTP input never crashes a node or gets an untyped answer (DESIGN.md §7): random methods,
//! routes, path segments (with broken percent-encoding), queries, media types and bodies (random
//! bytes, and valid request bodies cut or with a byte changed) against a running `tasklog serve`.
//! Every answer must be a success or the google.rpc.Status JSON error with the HTTP status as its
//! code and an `ErrorInfo` reason, never a 500; after all of it the node is healthy and writes.
//!
//! Cases: `TASKLOG_PROPTEST_CASES` (default 256).

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use tasklog_server::http::CreateRequest;
use tasklog_server::local::LocalCluster;

const BIN: &str = env!("CARGO_BIN_EXE_tasklog");

fn cases() -> u32 {
    std::env::var("TASKLOG_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Valid bodies of every route, the material the mutations start from.
const VALID_BODIES: &[&str] = &[
    r#"{"taskId":"t-1","message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}]}}"#,
    r#"{"expectedVersion":1,"events":[{"status":{"state":"TASK_STATE_WORKING"}}]}"#,
    r#"{"events":[{"artifact":{"artifact":{"artifactId":"a","parts":[{"data":{"k":1}}]},"append":true}}]}"#,
    r#"{"events":[{"message":{"messageId":"m2","role":"ROLE_AGENT","parts":[{"raw":"AAE="}]}}]}"#,
    r#"{"events":[{"metadata":{"x":[1,2]}}]}"#,
    r#"{"id":9,"addr":"127.0.0.1:1","wait":false}"#,
    r#"{"voters":[1],"keepAsLearners":true}"#,
    r#"{"to":1}"#,
];

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._~-]{1,12}",
        "[a-z%0-9]{1,9}",
        Just("t-1".to_owned()),
        Just("%FF%FE".to_owned()),
        Just("1".to_owned()),
        Just("18446744073709551616".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (0..10usize, segment()).prop_map(|(route, seg)| match route {
        0 => "/tasklog/v1/tasks".to_owned(),
        1 => format!("/tasklog/v1/tasks/{seg}"),
        2 => format!("/tasklog/v1/tasks/{seg}/events"),
        3 => format!("/tasklog/v1/cluster/nodes/{seg}"),
        4 => "/tasklog/v1/cluster/voters".to_owned(),
        5 => "/tasklog/v1/cluster/learners".to_owned(),
        6 => "/tasklog/v1/cluster/leader".to_owned(),
        7 => "/tasklog/v1/status".to_owned(),
        8 => format!("/{seg}"),
        _ => "/readyz".to_owned(),
    })
}

fn query() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![
            Just("historyLength"),
            Just("atLeastPosition"),
            Just("consistency"),
            Just("colour"),
        ],
        prop_oneof![
            "[0-9]{1,3}",
            "-[0-9]",
            "[a-z%]{0,6}",
            Just("linearizable".to_owned())
        ],
    );
    proptest::collection::vec(pair, 0..3).prop_map(|pairs| {
        // Every query bounds its wait, so an `atLeastPosition` far ahead costs 1 ms, not 5 s.
        let mut parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push("waitMs=1".into());
        parts.join("&")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (0..VALID_BODIES.len()).prop_map(|i| VALID_BODIES[i].as_bytes().to_vec()),
        (0..VALID_BODIES.len(), any::<prop::sample::Index>()).prop_map(|(i, cut)| VALID_BODIES[i]
            .as_bytes()[..cut.index(VALID_BODIES[i].len())]
            .to_vec()),
        (
            0..VALID_BODIES.len(),
            any::<prop::sample::Index>(),
            any::<u8>()
        )
            .prop_map(|(i, at, byte)| {
                let mut body = VALID_BODIES[i].as_bytes().to_vec();
                let at = at.index(body.len());
                body[at] = byte;
                body
            }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE"),
            Just("PATCH")
        ],
        path(),
        query(),
        prop_oneof![
            Just("application/json"),
            Just("application/json; charset=utf-8"),
            Just("text/plain"),
            Just(""),
        ],
        body(),
    )
        .prop_map(|(method, path, query, content_type, body)| Request {
            method,
            path: format!("{path}?{query}"),
            content_type,
            body,
        })
}

fn send(agent: &ureq::Agent, base: &str, request: &Request) -> (u16, String) {
    let url = format!("{base}{}", request.path);
    let builder = ureq::http::Request::builder()
        .method(request.method)
        .uri(&url);
    let builder = if request.content_type.is_empty() {
        builder
    } else {
        builder.header("content-type", request.content_type)
    };
    let http_request = builder.body(request.body.clone()).unwrap();
    let mut response = agent.run(http_request).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

#[test]
fn random_requests_get_typed_answers_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(Path::new(BIN), root.path(), 1, &[]).unwrap();
    cluster
        .wait_for_leader(&[1], Duration::from_secs(60))
        .unwrap();
    let client = cluster.client(1).clone();
    client
        .create(&CreateRequest {
            task_id: Some("t-1".into()),
            ..CreateRequest::default()
        })
        .unwrap();
    let base = client.base_url().to_owned();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        // A server may close a connection after answering without reading the body; a fresh
        // connection per request keeps that from showing up as the next request's failure.
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();

    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(request in request())| {
        let (status, text) = send(&agent, &base, &request);
        prop_assert!(status != 500, "{request:?} -> 500 {text}");
        if !(200..300).contains(&status) {
            let body: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{request:?} -> {status} {text:?}: {e}")))?;
            prop_assert_eq!(&body["error"]["code"], &serde_json::json!(status), "{:?} {}", request, text);
            let reason = body["error"]["details"][0]["reason"].as_str().unwrap_or("");
            prop_assert!(!reason.is_empty(), "{:?} -> {} {}", request, status, text);
        }
    });

    assert!(client.healthy(), "{}", cluster.logs());
    let written = client
        .create(&CreateRequest::default())
        .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", client.status(), cluster.logs()));
    assert!(client.get(&written.task_id, "").is_ok());
    let status = client.status().unwrap();
    assert_eq!(status.voters, vec![1], "{status:?}");
}

/// Found by the test above: a leader asked to hand leadership to itself held every write back,
/// waiting for a hand-over that never came, so the cluster answered `NO_LEADER` for good.
#[test]
fn transferring_leadership_to_the_leader_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(Path::new(BIN), root.path(), 1, &[]).unwrap();
    cluster
        .wait_for_leader(&[1], Duration::from_secs(60))
        .unwrap();
    let client = cluster.client(1);
    let status = client.transfer_leader(1).unwrap();
    assert_eq!(status.leader, Some(1));
    let written = client
        .create(&CreateRequest::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(written.version, 1);
}
