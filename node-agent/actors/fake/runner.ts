import type { ActorConfig } from '../../../common/nats.js';
import type { PeerRequest, PeerResponse } from '../../peer/protocol.js';
import type { ActorRunner } from '../host.js';
import { textResponse } from './actor.js';

// The actor host as the router and the alarms see it: records what it was asked to run
// and answers with what the test scripts (by default: 200 "ran", alarm still set).

export class FakeActorRunner implements ActorRunner {
  readonly calls: { config: ActorConfig; id: string; req: PeerRequest }[] = [];
  readonly alarms: { config: ActorConfig; id: string; time: number; retryCount: number; at: number; name?: string }[] = [];
  onCall: (config: ActorConfig, id: string, req: PeerRequest) => Promise<PeerResponse> = async () => textResponse(200, 'ran');
  onAlarm: (config: ActorConfig, id: string, time: number, retryCount: number) => Promise<boolean> = async () => true;

  call(config: ActorConfig, id: string, req: PeerRequest): Promise<PeerResponse> {
    this.calls.push({ config, id, req });
    return this.onCall(config, id, req);
  }

  alarm(config: ActorConfig, id: string, time: number, retryCount: number, name?: string): Promise<boolean> {
    this.alarms.push({ config, id, time, retryCount, at: Date.now(), ...(name !== undefined ? { name } : {}) });
    return this.onAlarm(config, id, time, retryCount);
  }
}
