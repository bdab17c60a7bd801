//! The `files` Lambda function: configuration is read once per cold
//! start, the DynamoDB and S3 clients are made on the first request that
//! needs each ([`api::sdk::Lazy`]), and every invocation goes to
//! `Files::handle`.

use files::Files;
use files::dynamo::DynamoStore;
use files::s3::S3Objects;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    api::init_logging();
    let tables = files::tables_from_env()?;
    let buckets = files::buckets_from_env()?;
    let url_expiry = files::url_expiry_from_env()?;
    let config = api::sdk::config().await;
    let files = Files {
        store: DynamoStore::new(api::sdk::Lazy::new({
            let config = config.clone();
            move || aws_sdk_dynamodb::Client::new(&config)
        })),
        objects: S3Objects::new(api::sdk::Lazy::new(move || files::s3::client(&config))),
        tables,
        buckets,
        url_expiry,
    };
    api::serve(|request| files.handle(request)).await
}
