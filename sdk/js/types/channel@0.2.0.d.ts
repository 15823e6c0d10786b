/// <reference path="./interfaces/omnigate-channel-host.d.ts" />
/// <reference path="./interfaces/omnigate-channel-plugin.d.ts" />
/// <reference path="./interfaces/omnigate-channel-types.d.ts" />
declare module 'omnigate:channel/channel@0.2.0' {
  export type * as OmnigateChannelHost020 from 'omnigate:channel/host@0.2.0'; // import omnigate:channel/host@0.2.0
  export type * as OmnigateChannelTypes020 from 'omnigate:channel/types@0.2.0'; // import omnigate:channel/types@0.2.0
  export * as plugin from 'omnigate:channel/plugin@0.2.0'; // export omnigate:channel/plugin@0.2.0
}
