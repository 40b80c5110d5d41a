//! One table per rule of §2: each allowed and each refused case, with the
//! refusal asserted. Rules are pure functions of the state, so the state is
//! built directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use shoal_protocol::action::{Action, DeploymentEdit, Outcome};
use shoal_protocol::hlc::Hlc;
use shoal_protocol::model::*;
use shoal_protocol::rules::{OpContext, RuleError, check};
use shoal_protocol::testkit::key;
use shoal_protocol::view;
use shoal_protocol::{PublicKey, SecretKey, TeamId};

const T0: u64 = 1_700_000_000_000;

struct Fx {
    s: TeamState,
    owner: SecretKey,
    admin: SecretKey,
    user: SecretKey,
    gone: SecretKey,
    n1: SecretKey,
    n2: SecretKey,
    laptop: SecretKey,
}

fn member(k: &SecretKey, name: &str, role: Role, removed: bool) -> Member {
    Member {
        key: k.public().to_hex(),
        name: name.into(),
        email: None,
        role,
        enc_key: String::new(),
        joined: Hlc::new(T0, 0),
        invite: None,
        removed: removed.then(|| Hlc::new(T0 + 1, 0)),
    }
}

fn node(k: &SecretKey, name: &str, runtime: Runtime) -> Node {
    Node {
        key: k.public().to_hex(),
        name: name.into(),
        runtime,
        enc_key: String::new(),
        addresses: vec![],
        agent_version: "t".into(),
        protocol_version: 1,
        joined: Hlc::new(T0, 0),
        invite: None,
        sponsor: None,
        removed: None,
    }
}

fn img(name: &str, registry: &str) -> Image {
    Image {
        name: name.into(),
        image: ImageRef {
            registry: registry.into(),
            name: "app".into(),
            tag: "1".into(),
        },
        config: ContainerConfig::default(),
    }
}

fn version(
    id: &str,
    product: &str,
    kind: VersionKind,
    parent: Option<&str>,
    child: Option<&str>,
    images: Vec<Image>,
) -> Version {
    Version {
        id: id.into(),
        product: product.into(),
        name: id.into(),
        kind,
        changelog: String::new(),
        auto_copy: false,
        parent: parent.map(Into::into),
        child: child.map(Into::into),
        images,
        created: Hlc::new(T0, 0),
    }
}

fn dep(
    id: &str,
    product: &str,
    version: &str,
    node: &SecretKey,
    prefix: &str,
    status: DeploymentStatus,
) -> Deployment {
    Deployment {
        id: id.into(),
        product: product.into(),
        version: version.into(),
        node: node.public().to_hex(),
        prefix: prefix.into(),
        note: String::new(),
        protected: false,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        status,
        tries: u32::from(status != DeploymentStatus::Preparing),
        created: Hlc::new(T0 + 10, 0),
        created_by: String::new(),
        reason: None,
        finished_try: 0,
        containers: BTreeMap::new(),
        events: vec![],
        frozen: None,
    }
}

/// owner, admin, user, a removed member; nodes n1, n2 (docker) and a laptop
/// (none); registry `r1` used by an image; product `web` (complex) with the
/// incremental chain v1 → v2, a rolling `edge` and an empty incremental
/// `bare`; product `db` (simple, rolling `dbv`); deployments in every status.
fn fx() -> Fx {
    let (owner, admin, user, gone) = (key(1), key(2), key(3), key(4));
    let (n1, n2, laptop) = (key(11), key(12), key(13));
    let mut s = TeamState::default();
    s.team.insert(
        TEAM_INFO_ID.into(),
        TeamInfo {
            name: "t".into(),
            description: String::new(),
            schema: 1,
            created: Hlc::new(T0, 0),
        },
    );
    for m in [
        member(&owner, "owner", Role::Owner, false),
        member(&admin, "admin", Role::Admin, false),
        member(&user, "user", Role::User, false),
        member(&gone, "gone", Role::Admin, true),
    ] {
        s.members.insert(m.key.clone(), m);
    }
    for n in [
        node(&n1, "n1", Runtime::Docker),
        node(&n2, "n2", Runtime::Docker),
        node(&laptop, "laptop", Runtime::None),
    ] {
        s.nodes.insert(n.key.clone(), n);
    }
    for (id, name) in [(HUB_REGISTRY_ID, "hub"), ("r1", "r1"), ("r2", "r2")] {
        s.registries.insert(
            id.into(),
            Registry {
                id: id.into(),
                name: name.into(),
                kind: RegistryKind::V2,
                url: Some("http://127.0.0.1:5000".into()),
                namespace: None,
                user: None,
                password: None,
                created: Hlc::new(T0, 0),
            },
        );
    }
    s.products.insert(
        "web".into(),
        Product {
            id: "web".into(),
            name: "web".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            default_version: Some("v1".into()),
            created: Hlc::new(T0, 0),
        },
    );
    s.products.insert(
        "db".into(),
        Product {
            id: "db".into(),
            name: "db".into(),
            kind: ProductKind::Simple,
            description: String::new(),
            default_version: Some("dbv".into()),
            created: Hlc::new(T0, 0),
        },
    );
    let mut secret_img = img("api", HUB_REGISTRY_ID);
    secret_img
        .config
        .secrets
        .insert("TOKEN".into(), SecretDecl { required: true });
    for v in [
        version(
            "v1",
            "web",
            VersionKind::Incremental,
            None,
            Some("v2"),
            vec![img("app", "r1")],
        ),
        version(
            "v2",
            "web",
            VersionKind::Incremental,
            Some("v1"),
            None,
            vec![img("app", HUB_REGISTRY_ID)],
        ),
        version(
            "edge",
            "web",
            VersionKind::Rolling,
            None,
            None,
            vec![img("app", HUB_REGISTRY_ID)],
        ),
        version("bare", "web", VersionKind::Incremental, None, None, vec![]),
        version(
            "sec",
            "web",
            VersionKind::Incremental,
            None,
            None,
            vec![secret_img],
        ),
        version(
            "dbv",
            "db",
            VersionKind::Rolling,
            None,
            None,
            vec![img("app", HUB_REGISTRY_ID)],
        ),
    ] {
        s.versions.insert(v.id.clone(), v);
    }
    for d in [
        dep(
            "d1-ok",
            "web",
            "v1",
            &n1,
            "prod",
            DeploymentStatus::Successful,
        ),
        dep(
            "d2-prep",
            "web",
            "v2",
            &n1,
            "prod",
            DeploymentStatus::Preparing,
        ),
        dep(
            "d2-run",
            "web",
            "v2",
            &n1,
            "stage",
            DeploymentStatus::InProgress,
        ),
        dep(
            "d2-fail",
            "web",
            "v2",
            &n2,
            "prod",
            DeploymentStatus::Failed,
        ),
        dep(
            "d1-old",
            "web",
            "v1",
            &n2,
            "prod",
            DeploymentStatus::Obsolete,
        ),
        dep(
            "d2-down",
            "web",
            "v2",
            &n2,
            "old",
            DeploymentStatus::Downgraded,
        ),
        dep(
            "edge-ok",
            "web",
            "edge",
            &n1,
            "edge",
            DeploymentStatus::Successful,
        ),
        dep(
            "sec-prep",
            "web",
            "sec",
            &n1,
            "sec",
            DeploymentStatus::Preparing,
        ),
        dep(
            "db-ok",
            "db",
            "dbv",
            &n2,
            "data",
            DeploymentStatus::Successful,
        ),
    ] {
        s.deployments.insert(d.id.clone(), d);
    }
    Fx {
        s,
        owner,
        admin,
        user,
        gone,
        n1,
        n2,
        laptop,
    }
}

fn ctx(author: &SecretKey, origin: &SecretKey) -> OpContext {
    OpContext {
        team: Some(TeamId([9; 32])),
        author: author.public(),
        origin: origin.public(),
        seq: 7,
        hlc: Hlc::new(T0 + 100, 0),
    }
}

fn id(c: &OpContext) -> String {
    c.new_id(0)
}

fn pk(k: &SecretKey) -> PublicKey {
    k.public()
}

type Expect = fn(&RuleError) -> bool;

/// Runs a table: (case name, author, action builder, `None` = allowed or `Some(matcher)`).
fn run(f: &Fx, cases: Vec<(&str, &SecretKey, Action, Option<Expect>)>) {
    for (name, author, action, expect) in cases {
        let c = ctx(author, &f.n1);
        let got = check(&f.s, &c, &action);
        match (expect, &got) {
            (None, Ok(())) => {}
            (Some(m), Err(e)) if m(e) => {
                // Messages tell the user what was wrong: never empty.
                assert!(!e.to_string().is_empty(), "{name}");
            }
            _ => panic!("case {name:?}: got {got:?}"),
        }
    }
}

fn create(f: &Fx, version: &str, node: &SecretKey, prefix: &str) -> Action {
    let c = ctx(&f.user, &f.n1);
    Action::DeploymentCreate {
        id: id(&c),
        version: version.into(),
        node: pk(node),
        prefix: prefix.into(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    }
}

#[test]
fn mutable_deployments_can_be_edited() {
    let f = fx();
    let edit = |id: &str| Action::DeploymentUpdate {
        id: id.into(),
        edit: DeploymentEdit {
            note: Some("n".into()),
            ..Default::default()
        },
    };
    run(
        &f,
        vec![
            ("preparing", &f.user, edit("d2-prep"), None),
            ("failed", &f.user, edit("d2-fail"), None),
            ("successful rolling", &f.user, edit("edge-ok"), None),
            (
                "successful incremental",
                &f.user,
                edit("d1-ok"),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::DeploymentState {
                            what: "editing",
                            ..
                        }
                    )
                }),
            ),
            (
                "in progress",
                &f.user,
                edit("d2-run"),
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "obsolete",
                &f.user,
                edit("d1-old"),
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "downgraded",
                &f.user,
                edit("d2-down"),
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "bad prefix",
                &f.user,
                Action::DeploymentUpdate {
                    id: "d2-prep".into(),
                    edit: DeploymentEdit {
                        prefix: Some("Bad_Prefix".into()),
                        ..Default::default()
                    },
                },
                Some(|e| matches!(e, RuleError::Invalid { what: "prefix", .. })),
            ),
            (
                "unknown",
                &f.user,
                edit("nope"),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NotFound {
                            what: "deployment",
                            ..
                        }
                    )
                }),
            ),
        ],
    );
}

#[test]
fn deployable_deployments_can_be_started() {
    let f = fx();
    let start = |id: &str| Action::DeploymentStart {
        id: id.into(),
        force: false,
    };
    run(
        &f,
        vec![
            ("preparing", &f.user, start("d2-prep"), None),
            ("failed", &f.user, start("d2-fail"), None),
            ("obsolete (rollback)", &f.user, start("d1-old"), None),
            ("successful rolling", &f.user, start("edge-ok"), None),
            (
                "successful incremental",
                &f.user,
                start("d1-ok"),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::DeploymentState {
                            what: "starting",
                            ..
                        }
                    )
                }),
            ),
            (
                "in progress",
                &f.user,
                start("d2-run"),
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "downgraded",
                &f.user,
                start("d2-down"),
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "required secret missing",
                &f.user,
                start("sec-prep"),
                Some(|e| matches!(e, RuleError::MissingSecret { key, .. } if key == "TOKEN")),
            ),
        ],
    );
}

#[test]
fn start_requires_sealed_secrets_and_unique_container_names() {
    let mut f = fx();
    let mut sealed = BTreeMap::new();
    sealed.insert(
        "TOKEN".to_string(),
        Sealed {
            recipient: format!("node:{}", f.n1.public()),
            data: "00".into(),
        },
    );
    f.s.deployments.get_mut("sec-prep").unwrap().secrets = sealed.clone();
    run(
        &f,
        vec![(
            "secret sealed to the node",
            &f.user,
            Action::DeploymentStart {
                id: "sec-prep".into(),
                force: false,
            },
            None,
        )],
    );
    sealed.get_mut("TOKEN").unwrap().recipient = format!("node:{}", f.n2.public());
    f.s.deployments.get_mut("sec-prep").unwrap().secrets = sealed;
    run(
        &f,
        vec![(
            "secret sealed to another node",
            &f.user,
            Action::DeploymentStart {
                id: "sec-prep".into(),
                force: false,
            },
            Some(|e| matches!(e, RuleError::SecretRecipient { .. })),
        )],
    );
    // db's container `app` runs on n2/data; web's `app` may not start there.
    let mut d = dep(
        "web-data",
        "web",
        "v2",
        &f.n2,
        "data",
        DeploymentStatus::Preparing,
    );
    d.created = Hlc::new(T0 + 20, 0);
    f.s.deployments.insert(d.id.clone(), d);
    run(
        &f,
        vec![(
            "container name taken on the slot",
            &f.user,
            Action::DeploymentStart {
                id: "web-data".into(),
                force: false,
            },
            Some(|e| matches!(e, RuleError::ContainerName { name, .. } if name == "app")),
        )],
    );
}

#[test]
fn deletable_and_copyable_is_anything_but_in_progress() {
    let f = fx();
    let c = ctx(&f.user, &f.n1);
    let copy = |from: &str| Action::DeploymentCopy {
        from: from.into(),
        id: id(&c),
        node: pk(&f.n2),
        prefix: "copy".into(),
    };
    let del = |id: &str| Action::DeploymentDelete { id: id.into() };
    let mut cases: Vec<(&str, &SecretKey, Action, Option<Expect>)> = vec![];
    for d in [
        "d2-prep", "d2-fail", "d1-ok", "d1-old", "d2-down", "edge-ok",
    ] {
        cases.push(("delete", &f.user, del(d), None));
        cases.push(("copy", &f.user, copy(d), None));
    }
    cases.push((
        "delete in progress",
        &f.user,
        del("d2-run"),
        Some(|e| {
            matches!(
                e,
                RuleError::DeploymentState {
                    what: "deleting",
                    ..
                }
            )
        }),
    ));
    cases.push((
        "copy in progress",
        &f.user,
        copy("d2-run"),
        Some(|e| {
            matches!(
                e,
                RuleError::DeploymentState {
                    what: "copying",
                    ..
                }
            )
        }),
    ));
    cases.push((
        "copy to a none-runtime node",
        &f.user,
        Action::DeploymentCopy {
            from: "d2-prep".into(),
            id: id(&c),
            node: pk(&f.laptop),
            prefix: "x".into(),
        },
        Some(|e| matches!(e, RuleError::NoRuntime { .. })),
    ));
    run(&f, cases);
}

#[test]
fn create_needs_images_and_respects_slots() {
    let f = fx();
    run(
        &f,
        vec![
            (
                "incremental, new slot",
                &f.user,
                create(&f, "v2", &f.n2, "new"),
                None,
            ),
            (
                "incremental, slot with a preparing one",
                &f.user,
                create(&f, "v2", &f.n1, "prod"),
                Some(|e| matches!(e, RuleError::DuplicateDeployment { id, .. } if id == "d2-prep")),
            ),
            (
                "incremental, slot with a failed one is fine",
                &f.user,
                create(&f, "v2", &f.n2, "prod"),
                None,
            ),
            (
                "rolling, any status blocks",
                &f.user,
                create(&f, "edge", &f.n1, "edge"),
                Some(|e| matches!(e, RuleError::DuplicateDeployment { id, .. } if id == "edge-ok")),
            ),
            (
                "rolling, other prefix",
                &f.user,
                create(&f, "edge", &f.n1, "edge2"),
                None,
            ),
            (
                "no image",
                &f.user,
                create(&f, "bare", &f.n1, "x"),
                Some(|e| matches!(e, RuleError::NoImages { .. })),
            ),
            (
                "node without runtime",
                &f.user,
                create(&f, "v2", &f.laptop, "x"),
                Some(|e| matches!(e, RuleError::NoRuntime { .. })),
            ),
            (
                "prefix too long",
                &f.user,
                create(&f, "v2", &f.n1, &"a".repeat(64)),
                Some(|e| matches!(e, RuleError::Invalid { what: "prefix", .. })),
            ),
            (
                "prefix with a leading dash",
                &f.user,
                create(&f, "v2", &f.n1, "-a"),
                Some(|e| matches!(e, RuleError::Invalid { what: "prefix", .. })),
            ),
            (
                "prefix 63 chars",
                &f.user,
                create(&f, "v2", &f.n1, &"a".repeat(63)),
                None,
            ),
            (
                "id not derived from the op",
                &f.user,
                Action::DeploymentCreate {
                    id: "chosen".into(),
                    version: "v2".into(),
                    node: pk(&f.n1),
                    prefix: "z".into(),
                    env: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                    instances: BTreeMap::new(),
                    protected: false,
                    note: String::new(),
                    force: false,
                },
                Some(|e| matches!(e, RuleError::BadId { .. })),
            ),
        ],
    );
}

#[test]
fn protected_deployments_block_unless_forced() {
    let mut f = fx();
    f.s.deployments.get_mut("d1-ok").unwrap().protected = true;
    f.s.deployments.get_mut("edge-ok").unwrap().protected = true;
    let mut create_forced = create(&f, "v2", &f.n1, "prod");
    if let Action::DeploymentCreate { force, .. } = &mut create_forced {
        *force = true;
    }
    f.s.versions.insert(
        "edge-b".into(),
        version(
            "edge-b",
            "web",
            VersionKind::Rolling,
            None,
            None,
            vec![img("app", HUB_REGISTRY_ID)],
        ),
    );
    let mut rolling = dep(
        "edge-2",
        "web",
        "edge-b",
        &f.n1,
        "edge",
        DeploymentStatus::Preparing,
    );
    rolling.created = Hlc::new(T0 + 20, 0);
    f.s.deployments.insert(rolling.id.clone(), rolling);
    // d2-prep (v2) on n1/prod where protected v1 runs.
    run(
        &f,
        vec![
            (
                "another version on the protected slot",
                &f.user,
                Action::DeploymentStart {
                    id: "d2-prep".into(),
                    force: false,
                },
                Some(|e| matches!(e, RuleError::Protected { id, .. } if id == "d1-ok")),
            ),
            (
                "forced",
                &f.user,
                Action::DeploymentStart {
                    id: "d2-prep".into(),
                    force: true,
                },
                None,
            ),
            (
                "rolling: any other deployment of the slot",
                &f.user,
                Action::DeploymentStart {
                    id: "edge-2".into(),
                    force: false,
                },
                Some(|e| matches!(e, RuleError::Protected { id, .. } if id == "edge-ok")),
            ),
        ],
    );
    f.s.deployments.remove("d2-prep");
    run(
        &f,
        vec![
            (
                "create on the protected slot",
                &f.user,
                create(&f, "v2", &f.n1, "prod"),
                Some(|e| matches!(e, RuleError::Protected { .. })),
            ),
            ("create forced", &f.user, create_forced, None),
            (
                "same version as the protected one",
                &f.user,
                create(&f, "v1", &f.n1, "prod"),
                None,
            ),
        ],
    );
}

#[test]
fn versions_freeze_and_only_leaves_increase() {
    let f = fx();
    let c = ctx(&f.user, &f.n1);
    let add = |v: &str| Action::ImageAdd {
        version: v.into(),
        image: Box::new(img("extra", HUB_REGISTRY_ID)),
    };
    let inc = |v: &str, name: &str| Action::VersionIncrease {
        from: v.into(),
        id: id(&c),
        name: name.into(),
        changelog: String::new(),
        copies: vec![],
    };
    run(
        &f,
        vec![
            ("rolling is always mutable", &f.user, add("edge"), None),
            (
                "incremental with a child is frozen",
                &f.user,
                add("v1"),
                Some(
                    |e| matches!(e, RuleError::VersionFrozen { why, .. } if why.contains("child")),
                ),
            ),
            (
                "incremental with a started deployment is frozen",
                &f.user,
                add("v2"),
                Some(
                    |e| matches!(e, RuleError::VersionFrozen { why, .. } if why.contains("deployment")),
                ),
            ),
            (
                "incremental with only preparing deployments",
                &f.user,
                add("sec"),
                None,
            ),
            ("increase a leaf", &f.user, inc("v2", "3.0"), None),
            (
                "increase with a child",
                &f.user,
                inc("v1", "1.5"),
                Some(|e| matches!(e, RuleError::HasChild { .. })),
            ),
            (
                "increase a rolling version",
                &f.user,
                inc("edge", "x"),
                Some(|e| matches!(e, RuleError::NotIncremental { .. })),
            ),
            (
                "increase to a taken name",
                &f.user,
                inc("v2", "v1"),
                Some(|e| matches!(e, RuleError::NameTaken { .. })),
            ),
            (
                "duplicate container name",
                &f.user,
                Action::ImageAdd {
                    version: "edge".into(),
                    image: Box::new(img("app", HUB_REGISTRY_ID)),
                },
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NameTaken {
                            what: "container",
                            ..
                        }
                    )
                }),
            ),
            (
                "unknown registry",
                &f.user,
                Action::ImageAdd {
                    version: "edge".into(),
                    image: Box::new(img("x", "nope")),
                },
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NotFound {
                            what: "registry",
                            ..
                        }
                    )
                }),
            ),
        ],
    );
}

#[test]
fn version_deletion_and_simple_products() {
    let f = fx();
    let c = ctx(&f.user, &f.n1);
    run(
        &f,
        vec![
            (
                "leaf with mutable deployments",
                &f.user,
                Action::VersionRemove { id: "sec".into() },
                None,
            ),
            (
                "with a child",
                &f.user,
                Action::VersionRemove { id: "v1".into() },
                Some(
                    |e| matches!(e, RuleError::VersionNotDeletable { why, .. } if why.contains("child")),
                ),
            ),
            (
                "with an immutable deployment",
                &f.user,
                Action::VersionRemove { id: "v2".into() },
                Some(
                    |e| matches!(e, RuleError::VersionNotDeletable { why, .. } if why.contains("cannot change")),
                ),
            ),
            (
                "rolling with a successful deployment (mutable)",
                &f.user,
                Action::VersionRemove { id: "edge".into() },
                None,
            ),
            (
                "a simple product's version",
                &f.user,
                Action::VersionRemove { id: "dbv".into() },
                Some(|e| matches!(e, RuleError::SimpleProduct { .. })),
            ),
            (
                "adding to a simple product",
                &f.user,
                Action::VersionCreate {
                    id: id(&c),
                    product: "db".into(),
                    name: "x".into(),
                    kind: VersionKind::Rolling,
                    changelog: String::new(),
                    auto_copy: false,
                },
                Some(|e| matches!(e, RuleError::SimpleProduct { .. })),
            ),
            (
                "simple product needs its version",
                &f.user,
                Action::ProductCreate {
                    id: id(&c),
                    name: "q".into(),
                    kind: ProductKind::Simple,
                    description: String::new(),
                    version: None,
                },
                Some(|e| matches!(e, RuleError::SimpleProduct { .. })),
            ),
            (
                "simple product with its version",
                &f.user,
                Action::ProductCreate {
                    id: c.new_id(0),
                    name: "q".into(),
                    kind: ProductKind::Simple,
                    description: String::new(),
                    version: Some(c.new_id(1)),
                },
                None,
            ),
            (
                "product name taken",
                &f.user,
                Action::ProductCreate {
                    id: id(&c),
                    name: "web".into(),
                    kind: ProductKind::Complex,
                    description: String::new(),
                    version: None,
                },
                Some(|e| matches!(e, RuleError::NameTaken { .. })),
            ),
            (
                "remove a product with an in-progress deployment",
                &f.user,
                Action::ProductRemove { id: "web".into() },
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "remove a product",
                &f.user,
                Action::ProductRemove { id: "db".into() },
                None,
            ),
        ],
    );
}

#[test]
fn guards_on_nodes_registries_and_the_owner() {
    let f = fx();
    run(
        &f,
        vec![
            (
                "node with deployments",
                &f.admin,
                Action::NodeRemove { node: pk(&f.n1) },
                Some(|e| matches!(e, RuleError::NodeHasDeployments { count, .. } if *count > 0)),
            ),
            (
                "node without deployments",
                &f.admin,
                Action::NodeRemove {
                    node: pk(&f.laptop),
                },
                None,
            ),
            (
                "registry used by an image",
                &f.admin,
                Action::RegistryRemove { id: "r1".into() },
                Some(|e| matches!(e, RuleError::RegistryInUse { count: 1, .. })),
            ),
            (
                "unused registry",
                &f.admin,
                Action::RegistryRemove { id: "r2".into() },
                None,
            ),
            (
                "the hub registry",
                &f.admin,
                Action::RegistryRemove {
                    id: HUB_REGISTRY_ID.into(),
                },
                Some(|e| matches!(e, RuleError::HubRegistry)),
            ),
            (
                "remove the owner",
                &f.admin,
                Action::MemberRemove {
                    member: pk(&f.owner),
                },
                Some(|e| matches!(e, RuleError::Owner)),
            ),
            (
                "demote the owner",
                &f.admin,
                Action::MemberRole {
                    member: pk(&f.owner),
                    role: Role::User,
                },
                Some(|e| matches!(e, RuleError::Owner)),
            ),
            (
                "make a second owner",
                &f.owner,
                Action::MemberRole {
                    member: pk(&f.user),
                    role: Role::Owner,
                },
                Some(|e| matches!(e, RuleError::Owner)),
            ),
            (
                "promote a user",
                &f.admin,
                Action::MemberRole {
                    member: pk(&f.user),
                    role: Role::Admin,
                },
                None,
            ),
            (
                "remove a user",
                &f.admin,
                Action::MemberRemove {
                    member: pk(&f.user),
                },
                None,
            ),
        ],
    );
}

#[test]
fn authority_by_role_and_node() {
    let f = fx();
    let c = ctx(&f.user, &f.n1);
    let finish = Action::DeploymentFinish {
        id: "d2-run".into(),
        attempt: 1,
        outcome: Outcome::Failed { reason: "x".into() },
        containers: BTreeMap::new(),
        events: vec![],
        frozen: None,
    };
    let reg = Action::RegistryAdd {
        id: id(&c),
        name: "new".into(),
        kind: RegistryKind::Unchecked,
        url: None,
        namespace: None,
        user: None,
        password: None,
    };
    let n1 = f.n1.clone();
    let n2 = f.n2.clone();
    run(
        &f,
        vec![
            (
                "user adds a registry",
                &f.user,
                reg.clone(),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::Role {
                            needed: Role::Admin,
                            has: Role::User,
                            ..
                        }
                    )
                }),
            ),
            (
                "admin adds a registry",
                &f.admin,
                Action::RegistryAdd {
                    id: ctx(&f.admin, &f.n1).new_id(0),
                    name: "new".into(),
                    kind: RegistryKind::Unchecked,
                    url: None,
                    namespace: None,
                    user: None,
                    password: None,
                },
                None,
            ),
            (
                "admin adds a registry whose password is sealed to each node",
                &f.admin,
                Action::RegistryAdd {
                    id: ctx(&f.admin, &f.n1).new_id(0),
                    name: "private".into(),
                    kind: RegistryKind::Unchecked,
                    url: None,
                    namespace: None,
                    user: Some("u".into()),
                    password: Some(Sealed {
                        recipient: "nodes".into(),
                        data: "shoal-sealed-set-v1".into(),
                    }),
                },
                None,
            ),
            (
                "a registry password sealed to one node only",
                &f.admin,
                Action::RegistryAdd {
                    id: ctx(&f.admin, &f.n1).new_id(0),
                    name: "private".into(),
                    kind: RegistryKind::Unchecked,
                    url: None,
                    namespace: None,
                    user: Some("u".into()),
                    password: Some(Sealed {
                        recipient: format!("node:{}", f.n1.public().to_hex()),
                        data: "x".into(),
                    }),
                },
                Some(|e| matches!(e, RuleError::SecretRecipient { .. })),
            ),
            (
                "user invites",
                &f.user,
                Action::InviteCreate {
                    id: id(&c),
                    kind: InviteKind::Member { role: Role::User },
                    invite_key: pk(&key(99)),
                    expires: Hlc::new(T0 + 10_000, 0),
                },
                Some(|e| matches!(e, RuleError::Role { .. })),
            ),
            (
                "removed member acts",
                &f.gone,
                Action::ProductCreate {
                    id: ctx(&f.gone, &f.n1).new_id(0),
                    name: "p".into(),
                    kind: ProductKind::Complex,
                    description: String::new(),
                    version: None,
                },
                Some(|e| matches!(e, RuleError::NotMember { .. })),
            ),
            (
                "stranger acts",
                &key(77),
                Action::VersionDefault {
                    version: "v1".into(),
                },
                Some(|e| matches!(e, RuleError::NotMember { .. })),
            ),
            (
                "member finishes a deployment",
                &f.user,
                finish.clone(),
                Some(|e| matches!(e, RuleError::NotTheNode { .. })),
            ),
            (
                "another node finishes it",
                &n2,
                finish.clone(),
                Some(|e| matches!(e, RuleError::NotTheNode { .. })),
            ),
        ],
    );
    // The target node itself, acting from itself.
    let c = OpContext {
        origin: n1.public(),
        ..ctx(&n1, &n1)
    };
    assert_eq!(check(&f.s, &c, &finish), Ok(()));
    let wrong_try = Action::DeploymentFinish {
        id: "d2-run".into(),
        attempt: 2,
        outcome: Outcome::Failed { reason: "x".into() },
        containers: BTreeMap::new(),
        events: vec![],
        frozen: None,
    };
    assert!(matches!(
        check(&f.s, &c, &wrong_try),
        Err(RuleError::WrongTry {
            expected: 1,
            got: 2
        })
    ));
    let not_running = Action::DeploymentFinish {
        id: "d2-prep".into(),
        attempt: 0,
        outcome: Outcome::Successful,
        containers: BTreeMap::new(),
        events: vec![],
        frozen: None,
    };
    assert!(matches!(
        check(&f.s, &c, &not_running),
        Err(RuleError::DeploymentState {
            what: "finishing",
            ..
        })
    ));
    // Success must freeze the config.
    let no_frozen = Action::DeploymentFinish {
        id: "d2-run".into(),
        attempt: 1,
        outcome: Outcome::Successful,
        containers: BTreeMap::new(),
        events: vec![],
        frozen: None,
    };
    assert_eq!(check(&f.s, &c, &no_frozen), Err(RuleError::Frozen));
    // An op made on a machine that is not a node of the team.
    let c = OpContext {
        origin: key(78).public(),
        ..ctx(&f.owner, &f.n1)
    };
    assert!(matches!(
        check(
            &f.s,
            &c,
            &Action::VersionDefault {
                version: "v1".into()
            }
        ),
        Err(RuleError::UnknownOrigin { .. })
    ));
}

#[test]
fn refusals_say_what_to_do() {
    let f = fx();
    let e = check(
        &f.s,
        &ctx(&f.user, &f.n1),
        &Action::NodeRemove {
            node: pk(&f.laptop),
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "node.remove needs the admin role; user ({}) is user: ask an admin or the owner",
            f.user.public().short()
        )
    );
    let e = check(
        &f.s,
        &ctx(&f.admin, &f.n1),
        &Action::NodeRemove { node: pk(&f.n1) },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "node n1 still has 5 deployment(s): delete them first"
    );
}

/// A copy of a team key of `epoch` (public key `public`, 64 hex) for
/// `recipient`, in the text form the rules read.
fn sealed_key(recipient: String, epoch: u32, public: &str) -> SealedKey {
    SealedKey {
        recipient,
        epoch,
        sealed: format!("{TEAM_KEY_PREFIX}{epoch}:{public}:shoal-seal-v1:00"),
    }
}

/// The fixture with encryption keys for its nodes and admins, a team key
/// of epoch 1 held by them, and `r1`'s password sealed to it.
fn keyed() -> (Fx, String) {
    let mut f = fx();
    for k in f.s.nodes.keys().cloned().collect::<Vec<_>>() {
        f.s.nodes.get_mut(&k).unwrap().enc_key = "ee".repeat(32);
    }
    for k in f.s.members.keys().cloned().collect::<Vec<_>>() {
        f.s.members.get_mut(&k).unwrap().enc_key = "ee".repeat(32);
    }
    let one = "11".repeat(32);
    for (r, _) in view::key_recipients(&f.s) {
        let k = sealed_key(r, 1, &one);
        f.s.keys.insert(k.entity_id(), k);
    }
    f.s.registries.get_mut("r1").unwrap().user = Some("u".into());
    f.s.registries.get_mut("r1").unwrap().password = Some(Sealed {
        recipient: team_recipient(1, &one),
        data: "shoal-seal-v1:00".into(),
    });
    (f, one)
}

#[test]
fn the_team_key_rotates_to_everyone_who_remains_with_every_password() {
    let (f, one) = keyed();
    let two = "22".repeat(32);
    let everyone = || -> Vec<SealedKey> {
        view::key_recipients(&f.s)
            .into_iter()
            .map(|(r, _)| sealed_key(r, 2, &two))
            .collect()
    };
    let resealed = |public: &str| -> BTreeMap<String, Sealed> {
        BTreeMap::from([(
            "r1".to_string(),
            Sealed {
                recipient: team_recipient(2, public),
                data: "shoal-seal-v1:01".into(),
            },
        )])
    };
    let rotate = |epoch, keys, registries| Action::KeyRotate {
        epoch,
        keys,
        registries,
    };
    let mut left_out = everyone();
    left_out.retain(|k| k.recipient != format!("node:{}", f.n2.public().to_hex()));
    let mut mixed = everyone();
    mixed[0] = sealed_key(mixed[0].recipient.clone(), 2, &"33".repeat(32));
    let mut to_user = everyone();
    to_user.push(sealed_key(
        format!("member:{}", f.user.public().to_hex()),
        2,
        &two,
    ));
    let mut garbled = everyone();
    garbled[0].sealed = "not a key".into();
    run(
        &f,
        vec![
            (
                "an admin rotates",
                &f.admin,
                rotate(2, everyone(), resealed(&two)),
                None,
            ),
            (
                "the owner rotates",
                &f.owner,
                rotate(2, everyone(), resealed(&two)),
                None,
            ),
            (
                "a user may not rotate",
                &f.user,
                rotate(2, everyone(), resealed(&two)),
                Some(|e| matches!(e, RuleError::Role { .. })),
            ),
            (
                "the epoch after the current one only",
                &f.admin,
                rotate(3, everyone(), resealed(&two)),
                Some(
                    |e| matches!(e, RuleError::Invalid { what: "key epoch", why, .. } if why.contains("epoch 1")),
                ),
            ),
            (
                "a node left out",
                &f.admin,
                rotate(2, left_out, resealed(&two)),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("is left out")),
                ),
            ),
            (
                "two keys in one rotation",
                &f.admin,
                rotate(2, mixed, resealed(&two)),
                Some(|e| matches!(e, RuleError::Invalid { why, .. } if why.contains("same key"))),
            ),
            (
                "sealed to a user",
                &f.admin,
                rotate(2, to_user, resealed(&two)),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("only to nodes and admins")),
                ),
            ),
            (
                "a copy that is not a team key",
                &f.admin,
                rotate(2, garbled, resealed(&two)),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("shoal-team-key-v1")),
                ),
            ),
            (
                "a registry password left on the old key",
                &f.admin,
                rotate(2, everyone(), BTreeMap::new()),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("registry r1")),
                ),
            ),
            (
                "a password sealed to the old key",
                &f.admin,
                rotate(2, everyone(), resealed(&one)),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::Invalid {
                            what: "registry password",
                            ..
                        }
                    )
                }),
            ),
            (
                "no copies at all",
                &f.admin,
                rotate(2, vec![], resealed(&two)),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("at least one")),
                ),
            ),
        ],
    );
}

#[test]
fn a_rotation_replaces_the_key_and_drops_copies_of_those_gone() {
    let (mut f, one) = keyed();
    // A copy left for a member since made a user, and one of an epoch two
    // rotations back, both go; the epoch-1 copies stay for stragglers.
    let demoted = sealed_key(format!("member:{}", f.user.public().to_hex()), 1, &one);
    f.s.keys.insert(demoted.entity_id(), demoted.clone());
    let two = "22".repeat(32);
    let keys: Vec<SealedKey> = view::key_recipients(&f.s)
        .into_iter()
        .map(|(r, _)| sealed_key(r, 2, &two))
        .collect();
    let password = Sealed {
        recipient: team_recipient(2, &two),
        data: "shoal-seal-v1:02".into(),
    };
    let action = Action::KeyRotate {
        epoch: 2,
        keys: keys.clone(),
        registries: BTreeMap::from([("r1".to_string(), password.clone())]),
    };
    let c = ctx(&f.admin, &f.n1);
    check(&f.s, &c, &action).unwrap();
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    assert_eq!(view::team_key(&f.s), Some((2, two.clone())));
    assert!(!f.s.keys.contains_key(&demoted.entity_id()));
    for k in &keys {
        assert!(
            view::holds_key(&f.s, &k.recipient, 2, &two),
            "{}",
            k.recipient
        );
        assert!(
            view::holds_key(&f.s, &k.recipient, 1, &one),
            "{}",
            k.recipient
        );
    }
    assert_eq!(f.s.registries["r1"].password, Some(password));
    // Epoch 3 drops the epoch-1 copies.
    let three = "33".repeat(32);
    let action = Action::KeyRotate {
        epoch: 3,
        keys: keys
            .iter()
            .map(|k| sealed_key(k.recipient.clone(), 3, &three))
            .collect(),
        registries: BTreeMap::from([(
            "r1".to_string(),
            Sealed {
                recipient: team_recipient(3, &three),
                data: "shoal-seal-v1:03".into(),
            },
        )]),
    };
    check(&f.s, &c, &action).unwrap();
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    assert!(
        f.s.keys.values().all(|k| k.epoch >= 2),
        "{:?}",
        f.s.keys.keys().collect::<Vec<_>>()
    );
    // Removing a node drops every copy it held.
    let gone = format!("node:{}", f.n2.public().to_hex());
    let action = Action::NodeRemove {
        node: f.n2.public(),
    };
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    assert!(f.s.keys.values().all(|k| k.recipient != gone));
    assert!(!view::key_recipient_eligible(&f.s, &gone));
}

#[test]
fn only_a_holder_of_a_key_seals_it() {
    let (mut f, one) = keyed();
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    let r = format!("node:{}", f.n1.public().to_hex());
    let c = ctx(&f.admin, &f.n1);
    // A key nobody holds, at the current epoch, greater than the team's:
    // it would become current and no one could open it.
    for public in [&b, &a] {
        let action = Action::KeySeal {
            keys: vec![sealed_key(r.clone(), 1, public)],
        };
        assert!(matches!(
            check(&f.s, &c, &action),
            Err(RuleError::Invalid {
                what: "team key",
                ..
            })
        ));
    }
    // A copy of the key the author holds is fine.
    let action = Action::KeySeal {
        keys: vec![sealed_key(r.clone(), 1, &one)],
    };
    check(&f.s, &c, &action).unwrap();
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    assert!(view::holds_key(&f.s, &r, 1, &one));
    assert_eq!(view::team_key(&f.s), Some((1, one.clone())));
    // The very first key of a team needs no holder.
    let mut empty = f.s.clone();
    empty.keys.clear();
    let action = Action::KeySeal {
        keys: vec![sealed_key(r.clone(), 1, &b)],
    };
    check(&empty, &c, &action).unwrap();
    // A new epoch comes only with a rotation.
    let action = Action::KeySeal {
        keys: vec![sealed_key(r.clone(), 2, &a)],
    };
    assert!(matches!(
        check(&f.s, &c, &action),
        Err(RuleError::Invalid { what: "key epoch", why, .. }) if why.contains("rotate-key")
    ));
    let action = Action::KeySeal {
        keys: vec![sealed_key(r, 0, &a)],
    };
    assert!(check(&f.s, &c, &action).is_err());
}

#[test]
fn registry_updates_change_credentials_or_address() {
    let (f, one) = keyed();
    let update = |url: Option<&str>, user: Option<&str>, password: Option<Sealed>, clear| {
        Action::RegistryUpdate {
            id: "r1".into(),
            url: url.map(Into::into),
            namespace: None,
            user: user.map(Into::into),
            password,
            clear_credentials: clear,
        }
    };
    let sealed = |recipient: String| Sealed {
        recipient,
        data: "shoal-seal-v1:04".into(),
    };
    run(
        &f,
        vec![
            (
                "new credentials",
                &f.admin,
                update(
                    None,
                    Some("v"),
                    Some(sealed(team_recipient(1, &one))),
                    false,
                ),
                None,
            ),
            (
                "a new address",
                &f.admin,
                update(Some("http://127.0.0.1:5001"), None, None, false),
                None,
            ),
            (
                "no credentials",
                &f.admin,
                update(None, None, None, true),
                None,
            ),
            (
                "a user may not",
                &f.user,
                update(None, None, None, true),
                Some(|e| matches!(e, RuleError::Role { .. })),
            ),
            (
                "nothing to change",
                &f.admin,
                update(None, None, None, false),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.starts_with("nothing to change")),
                ),
            ),
            (
                "both credentials and none",
                &f.admin,
                update(None, Some("v"), None, true),
                Some(|e| matches!(e, RuleError::Invalid { why, .. } if why.contains("not both"))),
            ),
            (
                "a password without a user",
                &f.admin,
                update(None, None, Some(sealed(team_recipient(1, &one))), false),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.contains("needs a --user")),
                ),
            ),
            (
                "a password sealed to one node",
                &f.admin,
                update(
                    None,
                    Some("v"),
                    Some(sealed(format!("node:{}", f.n1.public().to_hex()))),
                    false,
                ),
                Some(|e| matches!(e, RuleError::SecretRecipient { .. })),
            ),
            (
                "an unknown registry",
                &f.admin,
                Action::RegistryUpdate {
                    id: "nope".into(),
                    url: None,
                    namespace: None,
                    user: None,
                    password: None,
                    clear_credentials: true,
                },
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NotFound {
                            what: "registry",
                            ..
                        }
                    )
                }),
            ),
        ],
    );
    // The effect keeps what is not given and pairs the user with its password.
    let mut s = f.s.clone();
    let c = ctx(&f.admin, &f.n1);
    let action = update(
        None,
        Some("v"),
        Some(sealed(team_recipient(1, &one))),
        false,
    );
    for w in shoal_protocol::effect::effect(&s, &c, &action) {
        s.set(w.collection, &w.id, w.value);
    }
    let r = &s.registries["r1"];
    assert_eq!(r.user.as_deref(), Some("v"));
    assert_eq!(r.url, f.s.registries["r1"].url);
    assert_eq!(
        r.password.as_ref().map(|p| p.data.as_str()),
        Some("shoal-seal-v1:04")
    );
    let action = update(None, None, None, true);
    for w in shoal_protocol::effect::effect(&s.clone(), &c, &action) {
        s.set(w.collection, &w.id, w.value);
    }
    assert_eq!(
        (&s.registries["r1"].user, &s.registries["r1"].password),
        (&None, &None)
    );
}

/// A Kubernetes node `k8s` with a preparing deployment `k-prep` of the
/// rolling version `kv` (container `app` with `cfg`) on prefix `kube`, and a
/// Docker deployment `kd-prep` of the same version on n1.
fn kube_fx(cfg: ContainerConfig) -> Fx {
    let mut f = fx();
    let k8s = key(14);
    let n = node(&k8s, "k8s", Runtime::Kubernetes);
    f.s.nodes.insert(n.key.clone(), n);
    let mut image = img("app", HUB_REGISTRY_ID);
    image.config = cfg;
    let v = version("kv", "web", VersionKind::Rolling, None, None, vec![image]);
    f.s.versions.insert(v.id.clone(), v);
    for d in [
        dep(
            "k-prep",
            "web",
            "kv",
            &k8s,
            "kube",
            DeploymentStatus::Preparing,
        ),
        dep(
            "kd-prep",
            "web",
            "kv",
            &f.n1,
            "kube",
            DeploymentStatus::Preparing,
        ),
    ] {
        f.s.deployments.insert(d.id.clone(), d);
    }
    f
}

/// Each config field the Kubernetes runtime cannot honour, set alone.
fn kube_refused() -> Vec<(&'static str, ContainerConfig)> {
    let base = ContainerConfig::default;
    vec![
        (
            "networks",
            ContainerConfig {
                networks: vec!["back".into()],
                ..base()
            },
        ),
        (
            "network_mode",
            ContainerConfig {
                network_mode: Some(NetworkMode::Bridge),
                ..base()
            },
        ),
        (
            "network_mode",
            ContainerConfig {
                network_mode: Some(NetworkMode::None),
                ..base()
            },
        ),
        (
            "restart",
            ContainerConfig {
                restart: Some(RestartPolicy::No),
                ..base()
            },
        ),
        (
            "restart",
            ContainerConfig {
                restart: Some(RestartPolicy::OnFailure),
                ..base()
            },
        ),
        (
            "restart",
            ContainerConfig {
                restart: Some(RestartPolicy::UnlessStopped),
                ..base()
            },
        ),
        (
            "log_driver",
            ContainerConfig {
                log_driver: Some("syslog".into()),
                ..base()
            },
        ),
        (
            "log_options",
            ContainerConfig {
                log_options: BTreeMap::from([("max-size".into(), "1m".into())]),
                ..base()
            },
        ),
        (
            "expected.state",
            ContainerConfig {
                expected: Some(ExpectedState {
                    state: ExpectedRunState::Exited,
                    exit_code: Some(0),
                    timeout_s: None,
                }),
                ..base()
            },
        ),
        (
            "expected.exit_code",
            ContainerConfig {
                expected: Some(ExpectedState {
                    state: ExpectedRunState::Running,
                    exit_code: Some(0),
                    timeout_s: None,
                }),
                ..base()
            },
        ),
    ]
}

fn refused_field(e: &RuleError, field: &str) -> bool {
    let msg = e.to_string();
    matches!(e, RuleError::Invalid { what: "config field", value, .. } if value == field)
        && msg.contains(field)
        && msg.contains("Kubernetes")
        && msg.contains("container app")
}

#[test]
fn a_kubernetes_node_refuses_at_start_what_it_cannot_honour() {
    let start = |id: &str| Action::DeploymentStart {
        id: id.into(),
        force: false,
    };
    for (field, cfg) in kube_refused() {
        let f = kube_fx(cfg);
        let got = check(&f.s, &ctx(&f.user, &f.n1), &start("k-prep"));
        match &got {
            Err(e) if refused_field(e, field) => {}
            other => panic!("{field}: {other:?}"),
        }
        // A Docker node honours it.
        check(&f.s, &ctx(&f.user, &f.n1), &start("kd-prep")).unwrap();
    }
    // What Kubernetes honours starts: host networking, restart always, a
    // running expected state with a timeout.
    let f = kube_fx(ContainerConfig {
        network_mode: Some(NetworkMode::Host),
        restart: Some(RestartPolicy::Always),
        expected: Some(ExpectedState {
            state: ExpectedRunState::Running,
            exit_code: None,
            timeout_s: Some(120),
        }),
        ..ContainerConfig::default()
    });
    check(&f.s, &ctx(&f.user, &f.n1), &start("k-prep")).unwrap();
    // The instance config is layered on top: it may make a config fit.
    let mut f = kube_fx(ContainerConfig {
        restart: Some(RestartPolicy::No),
        ..ContainerConfig::default()
    });
    f.s.deployments.get_mut("k-prep").unwrap().instances.insert(
        "app".into(),
        ContainerConfig {
            restart: Some(RestartPolicy::Always),
            ..ContainerConfig::default()
        },
    );
    check(&f.s, &ctx(&f.user, &f.n1), &start("k-prep")).unwrap();
    // ... or make it unfit.
    let mut f = kube_fx(ContainerConfig::default());
    f.s.deployments.get_mut("k-prep").unwrap().instances.insert(
        "app".into(),
        ContainerConfig {
            log_driver: Some("journald".into()),
            ..ContainerConfig::default()
        },
    );
    let e = check(&f.s, &ctx(&f.user, &f.n1), &start("k-prep")).unwrap_err();
    assert!(refused_field(&e, "log_driver"), "{e}");
}

#[test]
fn image_configs_of_a_version_on_a_kubernetes_node_hold_only_what_it_honours() {
    let edit = |cfg: ContainerConfig| Action::ImageConfig {
        version: "kv".into(),
        name: "app".into(),
        image: ImageRef {
            registry: HUB_REGISTRY_ID.into(),
            name: "app".into(),
            tag: "2".into(),
        },
        config: Box::new(cfg),
    };
    let add = |cfg: ContainerConfig| Action::ImageAdd {
        version: "kv".into(),
        image: Box::new(Image {
            name: "side".into(),
            image: ImageRef {
                registry: HUB_REGISTRY_ID.into(),
                name: "side".into(),
                tag: "1".into(),
            },
            config: cfg,
        }),
    };
    for (field, cfg) in kube_refused() {
        let f = kube_fx(ContainerConfig::default());
        let c = ctx(&f.user, &f.n1);
        match check(&f.s, &c, &edit(cfg.clone())) {
            Err(e) if refused_field(&e, field) => {}
            other => panic!("image.config {field}: {other:?}"),
        }
        match check(&f.s, &c, &add(cfg.clone())) {
            Err(e) if e.to_string().contains(field) && e.to_string().contains("side") => {}
            other => panic!("image.add {field}: {other:?}"),
        }
        // Without the Kubernetes deployment, the version takes it.
        let mut f = f;
        f.s.deployments.remove("k-prep");
        check(&f.s, &c, &edit(cfg.clone())).unwrap();
        check(&f.s, &c, &add(cfg)).unwrap();
    }
    let f = kube_fx(ContainerConfig::default());
    let fits = ContainerConfig {
        restart: Some(RestartPolicy::Always),
        env: BTreeMap::from([("A".into(), "b".into())]),
        ..ContainerConfig::default()
    };
    check(&f.s, &ctx(&f.user, &f.n1), &edit(fits)).unwrap();
}

#[test]
fn an_import_is_checked_whole_and_written_as_one_version() {
    let f = fx();
    let c = ctx(&f.user, &f.n1);
    let import = |product: &str, product_name: Option<&str>, name: &str, images: Vec<Image>| {
        Action::ProductImport {
            product: product.into(),
            product_name: product_name.map(str::to_string),
            description: "imported".into(),
            version: c.new_id(1),
            name: name.into(),
            changelog: String::new(),
            images,
        }
    };
    let two = vec![img("web", HUB_REGISTRY_ID), img("db", "r1")];
    run(
        &f,
        vec![
            (
                "into a new product",
                &f.user,
                import(&id(&c), Some("shop"), "1.0.0", two.clone()),
                None,
            ),
            (
                "into an existing complex product",
                &f.user,
                import("web", None, "9.0.0", two.clone()),
                None,
            ),
            (
                "a product name taken",
                &f.user,
                import(&id(&c), Some("web"), "1.0.0", two.clone()),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NameTaken {
                            what: "product",
                            ..
                        }
                    )
                }),
            ),
            (
                "a simple product",
                &f.user,
                import("db", None, "2.0.0", two.clone()),
                Some(|e| matches!(e, RuleError::SimpleProduct { .. })),
            ),
            (
                "a version name taken",
                &f.user,
                import("web", None, &f.s.versions["v1"].name, two.clone()),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NameTaken {
                            what: "version",
                            ..
                        }
                    )
                }),
            ),
            (
                "two containers of one name",
                &f.user,
                import(
                    &id(&c),
                    Some("shop"),
                    "1.0.0",
                    vec![img("web", "r1"), img("web", "r2")],
                ),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NameTaken {
                            what: "container",
                            ..
                        }
                    )
                }),
            ),
            (
                "an unknown registry",
                &f.user,
                import(&id(&c), Some("shop"), "1.0.0", vec![img("web", "nope")]),
                Some(|e| matches!(e, RuleError::NotFound { .. })),
            ),
            (
                "a bad container name",
                &f.user,
                import(&id(&c), Some("shop"), "1.0.0", vec![img("Bad Name", "r1")]),
                Some(|e| matches!(e, RuleError::Invalid { .. })),
            ),
            (
                "a removed member",
                &f.gone,
                import(&id(&c), Some("shop"), "1.0.0", two.clone()),
                Some(|_| true),
            ),
        ],
    );
    // The effect: the product, its default version and every image at once.
    let mut s = f.s.clone();
    let action = import(&id(&c), Some("shop"), "1.0.0", two.clone());
    for w in shoal_protocol::effect::effect(&s.clone(), &c, &action) {
        s.set(w.collection, &w.id, w.value);
    }
    let p = s.products.values().find(|p| p.name == "shop").unwrap();
    assert_eq!(p.kind, ProductKind::Complex);
    let v = &s.versions[p.default_version.as_ref().unwrap()];
    assert_eq!(
        (v.name.as_str(), v.kind),
        ("1.0.0", VersionKind::Incremental)
    );
    assert_eq!(v.images, two);
    assert_eq!(action.name(), "product.import");
}

#[test]
fn product_and_version_metadata_change_by_any_member_even_when_frozen() {
    let f = fx();
    let describe = |id: &str| Action::ProductUpdate {
        id: id.into(),
        description: "the shop front".into(),
    };
    let note = |id: &str, changelog: Option<&str>, auto_copy: Option<bool>| Action::VersionUpdate {
        id: id.into(),
        changelog: changelog.map(Into::into),
        auto_copy,
    };
    run(
        &f,
        vec![
            ("a user describes a product", &f.user, describe("web"), None),
            ("a simple product too", &f.user, describe("db"), None),
            (
                "a removed member may not",
                &f.gone,
                describe("web"),
                Some(|e| matches!(e, RuleError::NotMember { .. })),
            ),
            (
                "a node is no member",
                &f.n1,
                describe("web"),
                Some(|e| matches!(e, RuleError::NotMember { .. })),
            ),
            (
                "an unknown product",
                &f.user,
                describe("nope"),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NotFound {
                            what: "product",
                            ..
                        }
                    )
                }),
            ),
            (
                "a changelog of a mutable version",
                &f.user,
                note("bare", Some("fixes"), None),
                None,
            ),
            // v1 has a child and a successful deployment, v2 one in progress:
            // frozen for images, not for what describes them.
            (
                "the changelog of a frozen version",
                &f.user,
                note("v1", Some("fixes"), None),
                None,
            ),
            (
                "auto-copy of a version in progress",
                &f.user,
                note("v2", None, Some(true)),
                None,
            ),
            (
                "both on a rolling version",
                &f.admin,
                note("edge", Some(""), Some(false)),
                None,
            ),
            (
                "nothing to change",
                &f.user,
                note("v1", None, None),
                Some(
                    |e| matches!(e, RuleError::Invalid { why, .. } if why.starts_with("nothing to change")),
                ),
            ),
            (
                "an unknown version",
                &f.user,
                note("nope", Some("x"), None),
                Some(|e| {
                    matches!(
                        e,
                        RuleError::NotFound {
                            what: "version",
                            ..
                        }
                    )
                }),
            ),
            (
                "a removed member may not note a version",
                &f.gone,
                note("v1", Some("x"), None),
                Some(|e| matches!(e, RuleError::NotMember { .. })),
            ),
        ],
    );
    // From a device that is not a node of the team: refused like every write.
    assert!(matches!(
        check(&f.s, &ctx(&f.user, &key(99)), &describe("web")),
        Err(RuleError::UnknownOrigin { .. })
    ));
    // The effects change the one field named and keep everything else.
    let mut s = f.s.clone();
    let c = ctx(&f.user, &f.n1);
    for action in [describe("web"), note("v1", Some("fixes"), None)] {
        for w in shoal_protocol::effect::effect(&s.clone(), &c, &action) {
            s.set(w.collection, &w.id, w.value);
        }
    }
    assert_eq!(s.products["web"].description, "the shop front");
    assert_eq!(
        s.products["web"].default_version,
        f.s.products["web"].default_version
    );
    let v1 = &s.versions["v1"];
    assert_eq!(v1.changelog, "fixes");
    assert_eq!(v1.auto_copy, f.s.versions["v1"].auto_copy);
    assert_eq!(v1.images, f.s.versions["v1"].images);
    assert_eq!(v1.child, f.s.versions["v1"].child);
    let action = note("v1", None, Some(true));
    for w in shoal_protocol::effect::effect(&s.clone(), &c, &action) {
        s.set(w.collection, &w.id, w.value);
    }
    assert!(s.versions["v1"].auto_copy);
    assert_eq!(
        s.versions["v1"].changelog, "fixes",
        "None keeps the changelog"
    );
    assert_eq!(describe("web").name(), "product.update");
    assert_eq!(action.name(), "version.update");
    assert_eq!(action.targets(), vec!["v1".to_string()]);
}

#[test]
fn deleting_with_volumes_leaves_a_command_for_the_target_node() {
    let mut f = fx();
    let c = ctx(&f.user, &f.n1);
    let command = id(&c);
    let action = Action::DeploymentDeleteVolumes {
        id: "d1-ok".into(),
        command: command.clone(),
    };
    check(&f.s, &c, &action).unwrap();
    let node = f.s.deployments["d1-ok"].node.clone();
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    assert!(!f.s.deployments.contains_key("d1-ok"));
    let cmd = &f.s.commands[&command];
    assert_eq!(
        (cmd.node.as_str(), cmd.container.as_str(), cmd.action),
        (node.as_str(), "d1-ok", ContainerAction::RemoveVolumes)
    );
    // Like a plain delete: not while in progress, and with a fresh id.
    let g = fx();
    run(
        &g,
        vec![
            (
                "in progress",
                &g.user,
                Action::DeploymentDeleteVolumes {
                    id: "d2-run".into(),
                    command: id(&ctx(&g.user, &g.n1)),
                },
                Some(|e| matches!(e, RuleError::DeploymentState { .. })),
            ),
            (
                "an id not derived from the op",
                &g.user,
                Action::DeploymentDeleteVolumes {
                    id: "d1-ok".into(),
                    command: "elsewhere".into(),
                },
                Some(|e| matches!(e, RuleError::BadId { .. })),
            ),
            // A member cannot ask for it as a container command.
            (
                "remove-volumes as a container command",
                &g.user,
                Action::ContainerCommand {
                    id: id(&ctx(&g.user, &g.n1)),
                    node: pk(&g.n1),
                    container: "prod-web".into(),
                    action: ContainerAction::RemoveVolumes,
                },
                Some(|e| matches!(e, RuleError::Invalid { .. })),
            ),
        ],
    );
}

#[test]
fn node_prune_is_an_admins_command_for_a_node_with_a_runtime() {
    let mut f = fx();
    let prune = |author: &SecretKey, node: &SecretKey| Action::NodePrune {
        id: id(&ctx(author, &f.n1)),
        node: pk(node),
    };
    run(
        &f,
        vec![
            ("an admin", &f.admin, prune(&f.admin, &f.n2), None),
            (
                "a user",
                &f.user,
                prune(&f.user, &f.n2),
                Some(|e| matches!(e, RuleError::Role { .. })),
            ),
            (
                "a node without a runtime",
                &f.admin,
                prune(&f.admin, &f.laptop),
                Some(|e| matches!(e, RuleError::NoRuntime { .. })),
            ),
        ],
    );
    let c = ctx(&f.admin, &f.n1);
    let action = Action::NodePrune {
        id: id(&c),
        node: pk(&f.n2),
    };
    for w in shoal_protocol::effect::effect(&f.s, &c, &action) {
        f.s.set(w.collection, &w.id, w.value);
    }
    let cmd = &f.s.commands[&id(&c)];
    assert_eq!(
        (cmd.node.clone(), cmd.action),
        (f.n2.public().to_hex(), ContainerAction::PruneImages)
    );
}
