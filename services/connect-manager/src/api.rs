//! gRPC `etl.v1.ConnectManager`: the registry over the wire.

use std::{collections::BTreeMap, sync::Arc};

use etl_proto::v1::{
    ConnectorInfo, ConnectorStatus, CreateConnectorRequest, DeleteConnectorRequest,
    DeleteConnectorResponse, GetConnectorStatusRequest, ListConnectorsRequest,
    ListConnectorsResponse, connect_manager_server::ConnectManager,
};
use tonic::{Request, Response, Status};

use crate::registry::{ConnectorView, Registry};

pub(crate) struct ConnectApi {
    pub(crate) registry: Arc<Registry>,
}

fn info(v: ConnectorView) -> ConnectorInfo {
    ConnectorInfo {
        name: v.name,
        config: v.config.into_iter().collect(),
        r#type: v.kind.as_str().to_string(),
    }
}

#[tonic::async_trait]
impl ConnectManager for ConnectApi {
    async fn create_connector(
        &self,
        request: Request<CreateConnectorRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let CreateConnectorRequest { name, config } = request.into_inner();
        let config: BTreeMap<String, String> = config.into_iter().collect();
        let (view, created) = self.registry.put(&name, config, false).await?;
        tracing::info!(connector = %name, created, "connector configured over gRPC");
        Ok(Response::new(info(view)))
    }

    async fn list_connectors(
        &self,
        _request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        let connectors = self.registry.list().await.into_iter().map(info).collect();
        Ok(Response::new(ListConnectorsResponse { connectors }))
    }

    async fn get_connector_status(
        &self,
        request: Request<GetConnectorStatusRequest>,
    ) -> Result<Response<ConnectorStatus>, Status> {
        let v = self.registry.get(&request.into_inner().name).await?;
        Ok(Response::new(ConnectorStatus {
            name: v.name,
            r#type: v.kind.as_str().to_string(),
            state: v.status.state.as_str().to_string(),
            files_finished: v.status.files_finished,
            files_failed: v.status.files_failed,
            records: v.status.records,
            last_error: v.status.last_error,
        }))
    }

    async fn delete_connector(
        &self,
        request: Request<DeleteConnectorRequest>,
    ) -> Result<Response<DeleteConnectorResponse>, Status> {
        self.registry.delete(&request.into_inner().name).await?;
        Ok(Response::new(DeleteConnectorResponse {}))
    }
}
