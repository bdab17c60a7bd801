//! The `chirps` Lambda function: configuration is read once per cold
//! start, the DynamoDB client is made on the first request that needs it
//! ([`api::sdk::Lazy`]), and every invocation goes to `Chirps::handle`.

use chirps::Chirps;
use chirps::dynamo::DynamoStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    api::init_logging();
    let tables = chirps::tables_from_env()?;
    let config = api::sdk::config().await;
    let chirps = Chirps {
        store: DynamoStore::new(api::sdk::Lazy::new(move || {
            aws_sdk_dynamodb::Client::new(&config)
        })),
        tables,
    };
    api::serve(|request| chirps.handle(request)).await
}
