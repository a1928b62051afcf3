// Routing cases, included once per engine by tests/routing.rs (see `for_each_engine!`).

const HEAD: &str = "listen = \"127.0.0.1:0\"\naccess_log = false\n[health_check]\ninterval = \"1h\"\n";

/// Three named backends: the default pool's, an "api" pool's and a "static" pool's.
struct Pools {
    default: Backend,
    api: Backend,
    stat: Backend,
}

impl Pools {
    fn start() -> Pools {
        Pools {
            default: Backend::named("default"),
            api: Backend::named("api"),
            stat: Backend::named("static"),
        }
    }

    fn config(&self, routes: &str) -> String {
        format!(
            "{HEAD}[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[backends]]\nurl = \"http://{}\"\n\
             [[pools]]\nname = \"api\"\nbackends = [{{ url = \"http://{}\" }}]\n\
             [[pools]]\nname = \"static\"\nbackends = [{{ url = \"http://{}\" }}]\n{routes}",
            self.default.addr, self.api.addr, self.stat.addr
        )
    }
}

const ROUTES: &str = "[[routes]]\nhost = \"api.example.com\"\npool = \"api\"\n\
                      [[routes]]\nhost = \"*.cdn.example.com\"\npool = \"static\"\n\
                      [[routes]]\npath_prefix = \"/static/\"\npool = \"static\"\n";

fn ask(lb: &Lb, text: &str) -> Response {
    request(lb.addr, text)
}

#[test]
fn requests_reach_the_pool_their_host_and_path_select() {
    let pools = Pools::start();
    let lb = lb_text(&pools.config(ROUTES));
    // (request, the pool's backend that answers)
    let cases = [
        ("GET /users HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "api"),
        ("GET /users HTTP/1.1\r\nHost: API.Example.COM:8080\r\n\r\n", "api"),
        ("GET /a.png HTTP/1.1\r\nHost: img.cdn.example.com\r\n\r\n", "static"),
        ("GET /a.png HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n", "default"),
        ("GET /static/app.js?v=2 HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "static"),
        ("GET /static HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "default"),
        ("GET /?/static/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "default"),
        // Absolute form: routed by its authority, which replaces Host.
        ("GET http://api.example.com/x HTTP/1.1\r\nHost: other\r\n\r\n", "api"),
        ("GET / HTTP/1.0\r\n\r\n", "default"),
    ];
    for (request, expected) in cases {
        let r = ask(&lb, request);
        assert_eq!((r.status, r.text().as_str()), (200, expected), "{request:?}");
    }
    let forwarded = pools.api.requests();
    assert_eq!(forwarded.last().unwrap().header("host").as_deref(), Some("api.example.com"));
}

#[test]
fn a_stripped_prefix_never_reaches_the_backend() {
    let pools = Pools::start();
    let routes = "[[routes]]\npath_prefix = \"/api\"\npool = \"api\"\nstrip_path_prefix = true\n";
    let lb = lb_text(&pools.config(routes));
    for (target, seen) in [
        ("/api/v1/users?x=1", "/v1/users?x=1"),
        ("/api", "/"),
        ("/api?q", "/?q"),
        ("/apiary", "/ary"),
    ] {
        let r = ask(&lb, &format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert_eq!(r.text(), "api", "{target}");
        let head = pools.api.requests().last().unwrap().head.clone();
        assert!(
            head.starts_with(&format!("GET {seen} HTTP/1.1\r\n")),
            "{target} reached the backend as {head:?}"
        );
    }
}

#[test]
fn without_a_default_pool_an_unrouted_request_gets_404() {
    let api = Backend::named("api");
    let lb = lb_text(&format!(
        "{HEAD}[[pools]]\nname = \"api\"\nbackends = [{{ url = \"http://{}\" }}]\n\
         [[routes]]\nhost = \"api.example.com\"\npool = \"api\"\n",
        api.addr
    ));
    let mut client = lb.client();
    client.send(b"GET / HTTP/1.1\r\nHost: elsewhere.example.com\r\n\r\n");
    assert_eq!(
        client.read_all(),
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n"
    );
    let r = ask(&lb, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "api"));
    assert_eq!(api.request_count(), 1, "the 404 never reached a backend");
}

#[test]
fn the_admin_api_lists_every_pool_in_one_flat_order() {
    let pools = Pools::start();
    let lb = lb_text(&pools.config(ROUTES));
    let admin = lb.admin_addr.unwrap();
    assert_eq!(ask(&lb, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").status, 200);
    lb.wait_idle();
    let stats: serde_json::Value = serde_json::from_slice(&get(admin, "/stats").body).unwrap();
    let listed: Vec<(u64, String, String, u64)> = stats["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["index"].as_u64().unwrap(),
                b["pool"].as_str().unwrap().to_string(),
                b["url"].as_str().unwrap().to_string(),
                b["request_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (0, "default".into(), format!("http://{}", pools.default.addr), 0),
            (1, "api".into(), format!("http://{}", pools.api.addr), 1),
            (2, "static".into(), format!("http://{}", pools.stat.addr), 0),
        ]
    );
    let metrics = String::from_utf8(get(admin, "/metrics").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "lb_backend_requests_total{{backend=\"http://{}\",pool=\"api\"}} 1",
            pools.api.addr
        )),
        "{metrics}"
    );
    // Indexes are the flat order: 1 is the api pool's backend. Disabled, its pool has none left.
    let mut admin_client = Client::connect(admin);
    admin_client.send(b"PUT /backends/1/enabled HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfalse");
    assert_eq!(admin_client.response(false).status, 200);
    let r = ask(&lb, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    assert_eq!(r.status, 503);
    assert_eq!(ask(&lb, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(), "default");
}

#[test]
fn a_reload_adds_and_removes_pools_and_routes() {
    let pools = Pools::start();
    let lb = lb_text(&pools.config(ROUTES));
    for _ in 0..2 {
        assert_eq!(ask(&lb, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").text(), "api");
    }
    // The static pool goes, the api route moves to a path, and a new pool "v2" appears.
    let v2 = Backend::named("v2");
    let text = format!(
        "{HEAD}[[backends]]\nurl = \"http://{}\"\n\
         [[pools]]\nname = \"api\"\nbackends = [{{ url = \"http://{}\" }}]\n\
         [[pools]]\nname = \"v2\"\nbackends = [{{ url = \"http://{}\" }}]\n\
         [[routes]]\npath_prefix = \"/v2/\"\npool = \"v2\"\n\
         [[routes]]\npath_prefix = \"/api/\"\npool = \"api\"\n",
        pools.default.addr, pools.api.addr, v2.addr
    );
    lb.control.reload(lb::config::Config::parse(&engine_config(&text)).unwrap());
    assert!(lb.control.sync(WAIT), "the reload is applied");
    assert_eq!(ask(&lb, "GET /v2/x HTTP/1.1\r\nHost: h\r\n\r\n").text(), "v2");
    assert_eq!(ask(&lb, "GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n").text(), "api");
    assert_eq!(
        ask(&lb, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").text(),
        "default",
        "the host route is gone"
    );
    assert_eq!(
        ask(&lb, "GET /static/a HTTP/1.1\r\nHost: h\r\n\r\n").text(),
        "default",
        "the static pool is gone"
    );
    lb.wait_idle();
    let s = lb.snapshot();
    let listed: Vec<(&str, u64)> = s
        .backends
        .iter()
        .map(|b| (b.pool.as_str(), b.request_count))
        .collect();
    // api kept its statistics: 2 before the reload, 1 after.
    assert_eq!(listed, [("default", 2), ("api", 3), ("v2", 1)]);
    let listed: Vec<&str> = s.backends.iter().map(|b| b.url.as_str()).collect();
    let url = |b: &Backend| format!("http://{}", b.addr);
    assert_eq!(listed, [url(&pools.default), url(&pools.api), url(&v2)]);
}

#[test]
fn a_sticky_cookie_keeps_a_client_on_its_backend_until_that_backend_goes() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let text = format!(
        "{HEAD}[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[pools]]\nname = \"app\"\nsticky_cookie = \"lb_app\"\n\
         backends = [{{ url = \"http://{}\" }}, {{ url = \"http://{}\" }}]\n\
         [[routes]]\npath_prefix = \"/\"\npool = \"app\"\n",
        a.addr, b.addr
    );
    let lb = lb_text(&text);
    let first = ask(&lb, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let set = first.header("set-cookie").expect("the first response sets the cookie");
    let value = set
        .strip_prefix("lb_app=")
        .and_then(|v| v.strip_suffix("; Path=/; HttpOnly"))
        .unwrap_or_else(|| panic!("{set}"))
        .to_string();
    assert_eq!(value.len(), 16, "{set}");
    for addr in [a.addr, b.addr] {
        assert!(!set.contains(&addr.port().to_string()), "opaque: {set}");
    }
    let home = first.text();
    let other = if home == "a" { "b" } else { "a" };
    let with_cookie = format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: x=1; lb_app={value}\r\n\r\n");
    for _ in 0..6 {
        let r = ask(&lb, &with_cookie);
        assert_eq!(r.text(), home, "the cookie wins over round robin");
        assert_eq!(r.header("set-cookie"), None, "a valid cookie is not set again");
    }
    // A value lb never set: an ordinary pick, and a cookie for it.
    let r = ask(&lb, "GET / HTTP/1.1\r\nHost: h\r\nCookie: lb_app=0000000000000000\r\n\r\n");
    assert!(r.header("set-cookie").is_some());
    // The same configuration again: the cookie still names the same backend.
    lb.control.reload(lb::config::Config::parse(&engine_config(&text)).unwrap());
    assert!(lb.control.sync(WAIT));
    assert_eq!(ask(&lb, &with_cookie).text(), home, "stable across a reload");
    // Its backend drained: another one, and the cookie moves there.
    let index = if home == "a" { 0 } else { 1 };
    let mut admin = Client::connect(lb.admin_addr.unwrap());
    admin.send(
        format!("PUT /backends/{index}/enabled HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfalse")
            .as_bytes(),
    );
    assert_eq!(admin.response(false).status, 200);
    let moved = ask(&lb, &with_cookie);
    assert_eq!(moved.text(), other);
    let new_set = moved.header("set-cookie").expect("the cookie follows the new backend");
    assert_ne!(new_set, set);
    let new_value = &new_set["lb_app=".len().."lb_app=".len() + 16];
    let again = format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: lb_app={new_value}\r\n\r\n");
    assert_eq!(ask(&lb, &again).text(), other);
}
