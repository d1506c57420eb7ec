//! The test server as kube-rs sees it: lists, watches, 410 Gone and the
//! re-list after it, outages, TokenReview.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kcred_testkube::{KubeApi, TokenClaims, pods};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};

async fn client(api: &KubeApi) -> kube::Client {
    let kc = Kubeconfig::read_from(api.kubeconfig()).expect("test setup");
    let opts = KubeConfigOptions {
        context: Some(kcred_testkube::CONTEXT.into()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("test setup");
    kube::Client::try_from(cfg).expect("test setup")
}

fn add_pod(api: &KubeApi, ns: &str, name: &str, node: &str) -> Pod {
    pods::create(api.store(), pods::new_pod(ns, name)).expect("test setup");
    pods::bind(api.store(), ns, name, node).expect("test setup")
}

#[tokio::test]
async fn list_reports_pods_and_a_resource_version() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    add_pod(&api, "db", "db-0", "node-b");
    let client = client(&api).await;

    let all = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = all
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["db-0", "web-0"]);
    assert_eq!(
        all.metadata.resource_version.as_deref(),
        Some(api.store().resource_version().to_string().as_str())
    );
    let web = Api::<Pod>::namespaced(client.clone(), "web")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    let p = &web.items[0];
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a")
    );
    assert_eq!(
        p.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("default")
    );
    assert!(p.metadata.uid.is_some());
}

#[tokio::test]
async fn create_get_and_delete_through_the_client() {
    let api = KubeApi::start().await.unwrap();
    let client = client(&api).await;
    let pods_api = Api::<Pod>::namespaced(client.clone(), "web");
    let created = pods_api
        .create(&PostParams::default(), &pods::new_pod("web", "web-1"))
        .await
        .unwrap();
    let again = pods_api
        .create(&PostParams::default(), &pods::new_pod("web", "web-1"))
        .await;
    assert!(
        matches!(again, Err(kube::Error::Api(e)) if e.code == 409),
        "name taken"
    );
    let got = pods_api.get("web-1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    pods_api.delete("web-1", &Default::default()).await.unwrap();
    let gone = pods_api.get("web-1").await;
    assert!(
        matches!(gone, Err(kube::Error::Api(e)) if e.code == 404),
        "deleted"
    );

    let nodes = Api::<Node>::all(client);
    let mut node = Node::default();
    node.metadata.name = Some("node-a".into());
    nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_request_without_the_token_is_unauthorized() {
    let api = KubeApi::start().await.unwrap();
    let kc = Kubeconfig::read_from(api.kubeconfig()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info.token = Some("wrong".to_string().into());
    let client = kube::Client::try_from(cfg).unwrap();
    let err = Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 401),
        "{err}"
    );
}

/// Collects watcher events on a channel.
fn spawn_watcher(client: kube::Client) -> tokio::sync::mpsc::UnboundedReceiver<Event<Pod>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let cfg = watcher::Config::default();
        let mut stream = watcher::watcher(Api::<Pod>::all(client), cfg).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(ev) = ev
                && tx.send(ev).is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event<Pod>>) -> Event<Pod> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a watch event within 30 s")
        .expect("watcher running")
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().expect("test setup")
}

/// Reads events until the initial list is done; returns the names listed.
async fn initial_list(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event<Pod>>) -> Vec<String> {
    let mut names = vec![];
    loop {
        match next_event(rx).await {
            Event::Init => names.clear(),
            Event::InitApply(p) => names.push(name(&p).to_string()),
            Event::InitDone => return names,
            other => panic!("unexpected {other:?} during the initial list"),
        }
    }
}

#[tokio::test]
async fn watch_streams_added_modified_and_deleted() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    let mut rx = spawn_watcher(client(&api).await);
    assert_eq!(initial_list(&mut rx).await, ["web-0"]);

    add_pod(&api, "web", "web-1", "node-a");
    // Created, then bound: two changes.
    let Event::Apply(p) = next_event(&mut rx).await else {
        panic!("apply")
    };
    assert_eq!(name(&p), "web-1");
    let Event::Apply(p) = next_event(&mut rx).await else {
        panic!("apply")
    };
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-a"));
    api.store().delete::<Pod>("web", "web-0").unwrap();
    let Event::Delete(p) = next_event(&mut rx).await else {
        panic!("delete")
    };
    assert_eq!(name(&p), "web-0");
}

#[tokio::test]
async fn an_expired_version_gets_410_and_the_relist_misses_no_deletion() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    add_pod(&api, "web", "web-1", "node-a");
    let mut rx = spawn_watcher(client(&api).await);
    assert_eq!(initial_list(&mut rx).await, ["web-0", "web-1"]);

    // Down; a deletion happens and the history is compacted meanwhile.
    api.stop();
    api.store().delete::<Pod>("web", "web-0").unwrap();
    api.store().compact();
    api.restart().await.unwrap();

    // The watcher's resumed watch is expired: it re-lists, and the new
    // list no longer holds the deleted pod.
    assert_eq!(initial_list(&mut rx).await, ["web-1"]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_answers_an_error_event_with_410() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    let client = client(&api).await;
    api.store().compact();
    let stream = Api::<Pod>::all(client)
        .watch(&kube::api::WatchParams::default(), "2")
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        Ok(kube::api::WatchEvent::Error(s)) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_carry_bookmarks() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    let client = client(&api).await;
    let rv = api.store().resource_version().to_string();
    let mut stream = Api::<Pod>::all(client)
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        kube::api::WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

fn claims(pod: &Pod, audiences: &[&str], valid_for: Duration) -> TokenClaims {
    TokenClaims {
        namespace: pod.metadata.namespace.clone().expect("test setup"),
        service_account: "default".into(),
        pod_name: pod.metadata.name.clone().expect("test setup"),
        pod_uid: pod.metadata.uid.clone().expect("test setup"),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        valid_for,
    }
}

async fn review(client: &kube::Client, token: &str, audiences: &[&str]) -> TokenReview {
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &tr)
        .await
        .expect("test setup")
}

#[tokio::test]
async fn token_review_authenticates_a_pod_bound_token() {
    let api = KubeApi::start().await.unwrap();
    let pod = add_pod(&api, "web", "web-0", "node-a");
    let client = client(&api).await;
    let token = api
        .tokens()
        .mint(claims(&pod, &["kcred", "other"], Duration::from_secs(600)));

    let status = review(&client, &token, &["kcred", "vault"])
        .await
        .status
        .unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(status.audiences, Some(vec!["kcred".to_string()]));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:web:default")
    );
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["web-0"]);
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        [pod.metadata.uid.unwrap()]
    );
}

#[tokio::test]
async fn token_review_refuses_wrong_audience_expired_unknown_and_orphaned_tokens() {
    let api = KubeApi::start().await.unwrap();
    let pod = add_pod(&api, "web", "web-0", "node-a");
    let client = client(&api).await;
    let good = api
        .tokens()
        .mint(claims(&pod, &["kcred"], Duration::from_secs(600)));
    let expired = api.tokens().mint(claims(&pod, &["kcred"], Duration::ZERO));

    for (token, audience, why) in [
        (good.as_str(), "vault", "audience"),
        (expired.as_str(), "kcred", "expired"),
        ("not-a-token", "kcred", "lookup"),
    ] {
        let status = review(&client, token, &[audience]).await.status.unwrap();
        assert_eq!(status.authenticated, Some(false), "{why}");
        assert!(status.error.unwrap().contains(why), "{why}");
    }
    // The pod is gone (or replaced): its token no longer proves anything.
    api.store().delete::<Pod>("web", "web-0").unwrap();
    let status = review(&client, &good, &["kcred"]).await.status.unwrap();
    assert_eq!(status.authenticated, Some(false));
}

#[tokio::test]
async fn cut_watches_resume_from_their_version_without_a_relist() {
    let api = KubeApi::start().await.unwrap();
    add_pod(&api, "web", "web-0", "node-a");
    let mut rx = spawn_watcher(client(&api).await);
    assert_eq!(initial_list(&mut rx).await, ["web-0"]);

    api.cut_watches();
    api.store().delete::<Pod>("web", "web-0").unwrap();
    // The deletion arrives as an event on the resumed watch, not as a
    // new list.
    let Event::Delete(p) = next_event(&mut rx).await else {
        panic!("expected the deletion as a watch event")
    };
    assert_eq!(name(&p), "web-0");
}

#[tokio::test]
async fn nodes_list_and_watch_like_pods() {
    let api = KubeApi::start().await.unwrap();
    let mut node = Node::default();
    node.metadata.name = Some("node-a".into());
    api.store().create(node).unwrap();
    let client = client(&api).await;
    let rv = api.store().resource_version().to_string();
    let mut stream = Api::<Node>::all(client)
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.store().delete::<Node>("", "node-a").unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await.unwrap().unwrap() {
                kube::api::WatchEvent::Bookmark(_) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    match ev {
        kube::api::WatchEvent::Deleted(n) => assert_eq!(n.metadata.name.as_deref(), Some("node-a")),
        other => panic!("expected the node's deletion, got {other:?}"),
    }
}
