//! Hostile: looks for ambient authority — environment, arguments, files,
//! the working directory — and reports what it found as the response text
//! (field 1 of a message), so a test can check that it found nothing; also
//! credentials in its metadata (the caller's key, a member's proof). Method
//! Who answers `<key id>|<roles>` from the metadata the node sets instead.
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Snoop;

impl Guest for Snoop {
    fn handle(ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let meta = |k: &str| {
            ctx.metadata
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if ctx.method == "Who" {
            return Ok(text_message(&format!(
                "{}|{}",
                meta("x-collector-key-id"),
                meta("x-collector-key-roles")
            )));
        }
        let mut found = Vec::new();
        for (k, _) in &ctx.metadata {
            if matches!(
                k.as_str(),
                "authorization" | "x-collector-peer" | "x-collector-caller"
            ) {
                found.push(format!("meta:{k}"));
            }
        }
        let env = std::env::vars().count();
        if env > 0 {
            found.push(format!("env:{env}"));
        }
        let args = std::env::args().count();
        if args > 0 {
            found.push(format!("args:{args}"));
        }
        for path in ["/etc/passwd", "/", ".", "Cargo.toml", "/proc/self/environ"] {
            if std::fs::read(path).is_ok() || std::fs::read_dir(path).is_ok() {
                found.push(format!("file:{path}"));
            }
        }
        if std::fs::write("/tmp/collector-snoop", b"x").is_ok() {
            found.push("write:/tmp".into());
        }
        Ok(text_message(&found.join(",")))
    }
}

/// A protobuf message with field 1 (string) = text.
fn text_message(text: &str) -> Vec<u8> {
    {
        let mut out = vec![0x0a];
        let mut len = text.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(text.as_bytes());
        out
    }
}

export!(Snoop);
