//! `echo`: returns its input unchanged (the floor for handler benchmarks).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Echo;

impl Guest for Echo {
    fn handle(_ctx: CallContext, input: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(input)
    }
}

export!(Echo);
